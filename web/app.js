// The dashboard: plain JavaScript, no build step, nothing fetched from elsewhere.
//
// Every API call goes through call(), which adds the key (kept in sessionStorage, asked for
// on a 401). The live charts read GET /sessions/{id}/events with fetch() and parse the
// Server-Sent Events themselves: EventSource cannot send an Authorization header, and a
// key in the URL would end up in logs.
'use strict';

const KEY = 'backprop-server-key';
const MAX_STREAMS = 4; // a browser opens at most 6 connections to a host; leave room
const POLL_MS = 5000;
const HISTORY_MAX = 200000; // points fetched for a chart; older epochs are left off
const LINE = '#1f77b4';

const $ = (sel, el = document) => el.querySelector(sel);
const cards = new Map(); // session id -> card
let streams = 0;
let datasets = [];

// ---------------------------------------------------------------------------------------
// HTTP, with the key

let keyAsked = null;

function askKey(refused) {
  if (!keyAsked) {
    keyAsked = new Promise((resolve) => {
      const dialog = $('#key-dialog');
      const form = $('#key-form');
      $('#key-error').textContent = refused ? 'That key was refused; try again.' : '';
      form.key.value = '';
      form.onsubmit = () => {
        sessionStorage.setItem(KEY, form.key.value.trim());
        keyAsked = null;
        resolve();
      };
      dialog.showModal();
    });
  }
  return keyAsked;
}

function headers(json) {
  const h = {};
  const key = sessionStorage.getItem(KEY);
  if (key) h.Authorization = `Bearer ${key}`;
  if (json) h['Content-Type'] = 'application/json';
  return h;
}

async function call(method, path, body) {
  for (;;) {
    const response = await fetch(path, {
      method,
      headers: headers(body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401) {
      await askKey(Boolean(sessionStorage.getItem(KEY)));
      continue;
    }
    const text = await response.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch (e) {
      json = null;
    }
    return { status: response.status, json };
  }
}

function say(text, bad) {
  const m = $('#message');
  m.textContent = text;
  m.className = bad ? 'error' : '';
}

function problem(r, what) {
  const detail = r.json && r.json.detail ? r.json.detail : `status ${r.status}`;
  say(`${what}: ${detail}`, true);
}

// ---------------------------------------------------------------------------------------
// Charts

function thin(points, max) {
  if (points.length <= max) return points;
  // Each bucket keeps its lowest and highest point, in epoch order: the curve's shape stays.
  const size = Math.ceil(points.length / (max / 2));
  const out = [points[0]];
  for (let i = 1; i < points.length; i += size) {
    let lo = points[i];
    let hi = points[i];
    for (let j = i; j < Math.min(i + size, points.length); j++) {
      if (points[j][1] < lo[1]) lo = points[j];
      if (points[j][1] > hi[1]) hi = points[j];
    }
    if (lo === hi) out.push(lo);
    else if (lo[0] < hi[0]) out.push(lo, hi);
    else out.push(hi, lo);
  }
  const last = points[points.length - 1];
  if (out[out.length - 1] !== last) out.push(last);
  return out;
}

function ticks(lo, hi, n) {
  const step0 = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0) || step0;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(v);
  return out;
}

function fmt(v) {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return Number(v.toPrecision(2)).toExponential().replace('e+', 'e');
  return Number(v.toPrecision(3)).toString();
}

// A log axis gets whole decades when it spans two or more.
function logTicks(lo, hi) {
  const span = Math.floor(hi) - Math.ceil(lo);
  if (span < 1) return ticks(lo, hi, 4);
  const step = Math.ceil((span + 1) / 5);
  const out = [];
  for (let t = Math.ceil(lo); t <= hi; t += step) out.push(t);
  return out;
}

function draw(card) {
  const canvas = card.canvas;
  const dpr = window.devicePixelRatio || 1;
  const w = Math.round(canvas.clientWidth * dpr) || canvas.width;
  const h = Math.round(w * 220 / 480);
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  const g = canvas.getContext('2d');
  g.clearRect(0, 0, w, h);
  const pad = { l: 58 * dpr, r: 24 * dpr, t: 10 * dpr, b: 26 * dpr };
  const pw = w - pad.l - pad.r;
  const ph = h - pad.t - pad.b;
  g.font = `${11 * dpr}px system-ui, sans-serif`;
  g.fillStyle = '#5b6770';
  const pts = card.points;
  if (pts.length === 0) {
    g.fillText('no training yet', pad.l + 8 * dpr, pad.t + ph / 2);
    return;
  }
  const log = $('#log').checked;
  const positive = pts.filter((p) => p[1] > 0).map((p) => p[1]);
  const floor = positive.length ? Math.min(...positive) : 1e-300;
  const yOf = (v) => (log ? Math.log10(Math.max(v, floor)) : v);
  let ylo = Infinity;
  let yhi = -Infinity;
  for (const p of pts) {
    const y = yOf(p[1]);
    if (y < ylo) ylo = y;
    if (y > yhi) yhi = y;
  }
  if (!(yhi > ylo)) {
    ylo -= 0.5;
    yhi += 0.5;
  }
  const xhi = Math.max(card.target || 0, pts[pts.length - 1][0], 1);
  const X = (e) => pad.l + (e / xhi) * pw;
  const Y = (v) => pad.t + ph - ((yOf(v) - ylo) / (yhi - ylo)) * ph;
  // Grid and tick labels.
  g.strokeStyle = '#e4e7ea';
  g.lineWidth = dpr;
  g.textAlign = 'right';
  g.textBaseline = 'middle';
  for (const t of log ? logTicks(ylo, yhi) : ticks(ylo, yhi, 4)) {
    const y = pad.t + ph - ((t - ylo) / (yhi - ylo)) * ph;
    g.beginPath();
    g.moveTo(pad.l, y);
    g.lineTo(pad.l + pw, y);
    g.stroke();
    g.fillText(fmt(log ? 10 ** t : t), pad.l - 6 * dpr, y);
  }
  g.textAlign = 'center';
  g.textBaseline = 'top';
  for (const t of ticks(0, xhi, 5)) {
    g.fillText(fmt(t), X(t), pad.t + ph + 6 * dpr);
  }
  g.strokeStyle = '#9aa3aa';
  g.strokeRect(pad.l, pad.t, pw, ph);
  // The curve.
  g.strokeStyle = LINE;
  g.lineWidth = 2 * dpr;
  g.lineJoin = 'round';
  g.beginPath();
  pts.forEach((p, i) => (i ? g.lineTo(X(p[0]), Y(p[1])) : g.moveTo(X(p[0]), Y(p[1]))));
  g.stroke();
  const last = pts[pts.length - 1];
  canvas.setAttribute('aria-label', `loss chart: loss ${fmt(last[1])} at epoch ${last[0]}`);
}

function redraw(card) {
  if (card.drawing) return;
  card.drawing = true;
  requestAnimationFrame(() => {
    card.drawing = false;
    draw(card);
  });
}

async function loadHistory(card, total) {
  const offset = Math.max(0, total - HISTORY_MAX);
  const r = await call('GET', `/sessions/${card.id}/loss?offset=${offset}`);
  if (r.status !== 200) return;
  const pts = [];
  if (offset === 0 && r.json.initial_loss !== null) pts.push([0, r.json.initial_loss]);
  r.json.loss.forEach((v, i) => pts.push([offset + i + 1, v]));
  card.points = thin(pts, 4000);
  card.loaded = r.json.total;
  redraw(card);
}

// ---------------------------------------------------------------------------------------
// Sessions

function describe(card, s) {
  const data = s.dataset ? s.dataset.builtin || `${s.dataset.samples} samples` : 'no dataset';
  $('.name', card.el).textContent = s.id.slice(0, 8);
  $('.name', card.el).title = s.id;
  $('.meta', card.el).textContent =
    `[${s.layers.join(', ')}] ${s.activation}, lr ${s.learning_rate}, ${data}`;
  card.epochs = s.epochs_trained;
  card.lastLoss = s.last_loss;
  numbers(card);
}

function numbers(card) {
  const job = card.job;
  let text = `${card.epochs} epochs`;
  if (card.lastLoss !== null && card.lastLoss !== undefined) text += `, loss ${fmt(card.lastLoss)}`;
  if (job && job.state !== 'done') {
    text += ` · ${job.state} ${job.epochs_done} of ${job.epochs_requested}`;
  } else if (job && job.result) {
    text += ` · last train ${job.result.status}`;
  } else if (job && job.error) {
    text += ` · last train failed: ${job.error.detail}`;
  }
  $('.numbers', card.el).textContent = text;
  const active = Boolean(job && job.state !== 'done');
  $('.train', card.el).disabled = active;
  $('.cancel', card.el).disabled = !active;
  const bar = $('.progress', card.el);
  bar.hidden = !active;
  if (active) {
    $('.bar', bar).style.width = `${(100 * job.epochs_done) / job.epochs_requested}%`;
  }
}

function setJob(card, job, epochsTrained) {
  card.job = job;
  card.target = job && job.state !== 'done' && epochsTrained !== undefined
    ? epochsTrained - job.epochs_done + job.epochs_requested
    : 0;
  numbers(card);
}

function addCard(s) {
  const el = $('#card').content.firstElementChild.cloneNode(true);
  const card = { id: s.id, el, canvas: $('canvas', el), points: [], loaded: -1, job: null };
  cards.set(s.id, card);
  $('.controls', el).onsubmit = (e) => {
    e.preventDefault();
    train(card);
  };
  $('.cancel', el).onclick = () => cancel(card);
  $('.delete', el).onclick = () => remove(card);
  describe(card, s);
  return card;
}

async function train(card) {
  const epochs = Number($('.controls', card.el).epochs.value);
  const r = await call('POST', `/sessions/${card.id}/train`,
    { epochs, wait: false, return_loss: false });
  if (r.status !== 202) return problem(r, 'Train');
  say('');
  setJob(card, r.json, card.epochs);
  follow(card);
}

async function cancel(card) {
  const r = await call('DELETE', `/sessions/${card.id}/training`);
  if (r.status !== 200 && r.status !== 202) return problem(r, 'Cancel');
  setJob(card, r.json, card.epochs);
}

async function remove(card) {
  const r = await call('DELETE', `/sessions/${card.id}`);
  if (r.status !== 204 && r.status !== 404) return problem(r, 'Delete');
  card.el.remove();
  cards.delete(card.id);
  count();
}

function count() {
  $('#count').textContent = cards.size ? `(${cards.size})` : '';
  $('#empty').hidden = cards.size > 0;
}

// ---------------------------------------------------------------------------------------
// Live progress: the event stream, read with fetch()

function onEvent(card, name, data) {
  if (name === 'state' || name === 'done') {
    card.epochs = data.epochs_trained;
    card.lastLoss = data.last_loss;
    setJob(card, data.job, data.epochs_trained);
    if (card.loaded < 0 || (name === 'done' && card.loaded !== data.epochs_trained)) {
      loadHistory(card, data.epochs_trained);
    }
  } else if (name === 'epoch') {
    card.points.push([data.epoch, data.loss]);
    if (card.points.length > 8000) card.points = thin(card.points, 4000);
    card.epochs = data.epoch;
    card.lastLoss = data.loss;
    if (card.job) card.job.epochs_done = data.epoch - (card.target - card.job.epochs_requested);
    numbers(card);
    redraw(card);
  }
}

async function follow(card) {
  if (card.following || streams >= MAX_STREAMS) return;
  card.following = true;
  streams += 1;
  try {
    let response;
    for (;;) {
      response = await fetch(`/sessions/${card.id}/events`, { headers: headers(false) });
      if (response.status !== 401) break;
      await askKey(true);
    }
    if (!response.ok) return;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let at;
      while ((at = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, at);
        buffer = buffer.slice(at + 2);
        let name = 'message';
        let data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) name = line.slice(6).trim();
          else if (line.startsWith('data:')) data += line.slice(5).trim();
        }
        if (data) onEvent(card, name, JSON.parse(data));
      }
    }
  } catch (e) {
    // The stream broke (the server restarted): the next poll looks again.
  } finally {
    card.following = false;
    streams -= 1;
  }
}

// ---------------------------------------------------------------------------------------
// The list, kept up to date

async function poll() {
  const r = await call('GET', '/sessions?limit=100');
  if (r.status !== 200) {
    $('#server').textContent = `the server answered ${r.status}`;
    return;
  }
  $('#server').textContent = `${location.host} · ${r.json.total} sessions`;
  const seen = new Set();
  const list = $('#sessions');
  r.json.sessions.forEach((s, i) => {
    seen.add(s.id);
    const card = cards.get(s.id) || addCard(s);
    if (list.children[i] !== card.el) list.insertBefore(card.el, list.children[i] || null);
    if (!card.following) describe(card, s);
  });
  for (const [id, card] of cards) {
    if (!seen.has(id)) {
      card.el.remove();
      cards.delete(id);
    }
  }
  count();
  for (const card of cards.values()) {
    if (card.following) continue;
    if (card.loaded !== card.epochs) await loadHistory(card, card.epochs);
    const t = await call('GET', `/sessions/${card.id}/training`);
    setJob(card, t.status === 200 ? t.json : null, card.epochs);
    if (card.job && card.job.state !== 'done') follow(card);
  }
}

async function loadDatasets() {
  const r = await call('GET', '/datasets');
  if (r.status !== 200) return;
  datasets = r.json.datasets;
  const select = $('#datasets');
  select.replaceChildren(...datasets.map((d) => {
    const o = document.createElement('option');
    o.value = d.name;
    o.textContent = `${d.name} (${d.samples} samples, ${d.features} features, ${d.classes} classes)`;
    return o;
  }));
  select.onchange = fitLayers;
}

// Keeps the layer sizes' ends on the chosen dataset's features and classes.
function fitLayers() {
  const d = datasets.find((x) => x.name === $('#datasets').value);
  const input = $('#create').layers;
  const sizes = input.value.split(',').map((v) => Number(v.trim())).filter((v) => v > 0);
  if (!d || sizes.length < 2) return;
  sizes[0] = d.features;
  sizes[sizes.length - 1] = d.classes;
  input.value = sizes.join(',');
}

async function create(e) {
  e.preventDefault();
  const f = e.target;
  const body = {
    layers: f.layers.value.split(',').map((v) => Number(v.trim())),
    activation: f.activation.value,
    learning_rate: Number(f.learning_rate.value),
    init: { method: 'numpy_rand', seed: Number(f.seed.value) },
  };
  const r = await call('POST', '/sessions', body);
  if (r.status !== 201) return problem(r, 'Create');
  const d = await call('PUT', `/sessions/${r.json.id}/dataset`, { builtin: f.dataset.value });
  if (d.status !== 200) problem(d, 'Dataset');
  else say(`Created session ${r.json.id.slice(0, 8)} on ${f.dataset.value}.`);
  await poll();
}

async function main() {
  $('#create').onsubmit = create;
  $('#log').onchange = () => cards.forEach(redraw);
  window.onresize = () => cards.forEach(redraw);
  await loadDatasets();
  await poll();
  setInterval(poll, POLL_MS);
}

main();
