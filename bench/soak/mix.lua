-- wrk script for bench/soak.sh: mixed grader traffic against one backprop-server.
--
-- wrk answers each connection's request before sending its next one, but a thread's
-- responses do not say which request they answer, so there is no per-client flow here.
-- Instead each thread keeps pools of the sessions it created: `fresh` (no dataset yet) and
-- `ready` (dataset sent), and every request draws an operation by weight and a session from
-- the pool it needs. The pools are capped, and the oldest ready session is deleted when a
-- new one would pass the cap, so the server holds a bounded number of sessions and its
-- memory can settle once the traffic is steady.
--
-- Environment: SOAK_MAX_REQUESTS (per thread; the thread stops after that many
-- responses), SOAK_RESULT (file that done() writes the tallies to), SOAK_SEED.

local max_requests = tonumber(os.getenv("SOAK_MAX_REQUESTS") or "1000000000")
local result_path = os.getenv("SOAK_RESULT") or "/dev/stdout"
local POOL_CAP = 48

local threads = {}
local next_id = 0

function setup(thread)
    next_id = next_id + 1
    thread:set("thread_id", next_id)
    table.insert(threads, thread)
end

local json_headers = { ["Content-Type"] = "application/json" }

-- Bodies, built once.
local CDS_X = "[[[56, 231], [24, 1]], [[120, 30], [24, 0]], [[2, 5], [210, 190]], "
    .. "[[60, 220], [30, 2]], [[130, 40], [20, 3]], [[4, 10], [200, 180]]]"
local CDS_Y_ROWS = "[[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]]"
local CDS_FLAT = "[[56, 231, 24, 1], [120, 30, 24, 0], [2, 5, 210, 190], "
    .. "[60, 220, 30, 2], [130, 40, 20, 3], [4, 10, 200, 180]]"
local CDS_Y_IDX = "[0, 1, 2, 0, 1, 2]"

local creates = {
    '{"layers": [4, 3], "init": {"method": "numpy_rand", "seed": 0}}',
    '{"layers": [4, 4, 3], "init": {"method": "numpy_rand", "seed": 42}}',
    '{"layers": [4, 8, 3], "activation": "tanh", "bias": true, "init": {"method": "xavier", "seed": 7}}',
    '{"layers": [4, 16, 3], "activation": "sigmoid", "grad_reduction": "mean", "learning_rate": 0.1, "init": {"method": "he"}}',
    '{"layers": [4, 3], "init": {"method": "explicit", "weights": [[[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8], [0.9, 1.0, 1.1, 1.2]]]}}',
}

local datasets = {
    '{"builtin": "cat-dog-ship"}',
    '{"builtin": "cat-dog-ship"}',
    '{"builtin": "iris"}',
    '{"x": ' .. CDS_X .. ', "y": ' .. CDS_Y_ROWS .. "}",
    '{"x": ' .. CDS_FLAT .. ', "y": ' .. CDS_Y_IDX .. "}",
}

local trains = {
    '{"epochs": 1}',
    '{"epochs": 5, "return_loss": true}',
    '{"epochs": 10, "return_loss": false}',
    '{"epochs": 20}',
    '{"epochs": 100, "return_loss": false}',
}

local gradients = {
    "",
    "{}",
    '{"x": [[[56, 231], [24, 1]], [[120, 30], [24, 0]]], "y": [[1, 0, 0], [0, 1, 0]]}',
}

local predicts = {
    '{"x": [[[56, 231], [24, 1]]]}',
    '{"x": [[[56, 231], [24, 1]], [[2, 5], [210, 190]]], "y": [0, 2]}',
    '{"x": ' .. CDS_FLAT .. "}",
}

local checks = {
    '{"loss": [1.0, 0.9]}',
    '{"probabilities": [[0.3, 0.3, 0.4]], "rtol": 1e-6}',
}

-- Malformed requests: {method, path suffix ("" = /sessions, "S" = a ready session's path
-- plus the rest, "U" = an unknown session), content type, body}.
local deep = string.rep("[", 5000) .. string.rep("]", 5000)
local malformed = {
    { "POST", "", "application/json", '{"layers": [4, 3]' },                      -- bad JSON
    { "POST", "", "application/json", '{"layers": [4, 3], "learnin_rate": 0.1}' }, -- unknown field
    { "POST", "", "application/json", '{"layers": "4,3"}' },                       -- wrong type
    { "POST", "", "application/json", '{"layers": [4.0, 3]}' },                    -- 4.0 for an integer
    { "POST", "", "application/json", '{"layers": [100000, 100000]}' },            -- too_large
    { "POST", "", "application/json", '{"layers": [4, 3], "learning_rate": 1e400}' }, -- beyond f64
    { "POST", "", "text/plain", '{"layers": [4, 3]}' },                            -- 415
    { "POST", "", "application/json", "" },                                        -- empty body
    { "POST", "", "application/json", '{"layers": ' .. deep .. "}" },              -- nesting bomb
    { "POST", "S/train", "application/json", '{"epochs": "10"}' },
    { "POST", "S/train", "application/json", '{"epochs": 0}' },
    { "POST", "S/predict", "application/json", '{"x": ' .. deep .. "}" },
    { "POST", "S/predict", "application/json", '{"x": [[1, 2, 3]]}' },             -- shape_mismatch
    { "POST", "S/predict", "application/json", '{"x": [[1, 2, 3, 4]], "y": [7]}' },  -- invalid_labels
    { "PUT", "S/dataset", "application/json", '{"x": [[1, 2, 3]], "y": [0]}' },
    { "PUT", "S/dataset", "application/json", '{"builtin": "mnist"}' },            -- unknown dataset
    { "PUT", "S/weights", "application/json", '{"weights": [[[1, 2]]]}' },
    { "POST", "U/train", "application/json", '{"epochs": 1}' },                    -- unknown id
    { "GET", "U", nil, nil },
    { "DELETE", "U", nil, nil },
    { "GET", "/not-a-uuid", nil, nil },
    { "DELETE", "", nil, nil },                                                    -- 405
    { "GET", "/", nil, nil },                                                      -- trailing slash
}

local fresh, ready = {}, {}
local to_delete = {}
local responses = 0
-- Globals, not locals: done() reads them from each thread with thread:get().
issued = {}
statuses = {}

local function hex(n)
    local t = {}
    for i = 1, n do
        t[i] = string.format("%x", math.random(0, 15))
    end
    return table.concat(t)
end

local function unknown_id()
    return "/sessions/" .. hex(8) .. "-" .. hex(4) .. "-4" .. hex(3) .. "-a" .. hex(3) .. "-" .. hex(12)
end

local function pick(list)
    return list[math.random(1, #list)]
end

local function count(op)
    issued[op] = (issued[op] or 0) + 1
end

local function req(method, path, body, content_type)
    if body == nil then
        return wrk.format(method, path, {}, nil)
    end
    local h = json_headers
    if content_type ~= "application/json" then
        h = { ["Content-Type"] = content_type }
    end
    return wrk.format(method, path, h, body)
end

function init(args)
    local seed = tonumber(os.getenv("SOAK_SEED") or "1") * 1000 + (thread_id or 0)
    math.randomseed(seed)
end

-- Weights, out of 100.
local MIX = {
    { 8, "create" }, { 9, "dataset" }, { 16, "train" }, { 10, "gradients" },
    { 15, "predict" }, { 7, "check" }, { 10, "read" }, { 7, "delete" }, { 18, "malformed" },
}

local function draw()
    local r = math.random(1, 100)
    for _, w in ipairs(MIX) do
        r = r - w[1]
        if r <= 0 then
            return w[2]
        end
    end
    return "malformed"
end

local function create()
    count("create")
    return req("POST", "/sessions", pick(creates), "application/json")
end

function request()
    local pending = table.remove(to_delete)
    if pending then
        count("delete")
        return req("DELETE", pending)
    end
    local op = draw()
    if op == "create" or (#fresh == 0 and #ready == 0) then
        return create()
    end
    if op == "dataset" then
        local s = table.remove(fresh, 1)
        if s == nil then
            s = pick(ready) -- replacing a dataset is grader traffic too
        else
            table.insert(ready, s)
            if #ready > POOL_CAP then
                table.insert(to_delete, table.remove(ready, 1))
            end
        end
        count("dataset")
        return req("PUT", s .. "/dataset", pick(datasets), "application/json")
    end
    if #ready == 0 then
        return create()
    end
    local s = pick(ready)
    if op == "train" then
        count("train")
        return req("POST", s .. "/train", pick(trains), "application/json")
    elseif op == "gradients" then
        count("gradients")
        local b = pick(gradients)
        if b == "" then
            return req("POST", s .. "/gradients")
        end
        return req("POST", s .. "/gradients", b, "application/json")
    elseif op == "predict" then
        count("predict")
        return req("POST", s .. "/predict", pick(predicts), "application/json")
    elseif op == "check" then
        count("check")
        return req("POST", s .. "/check", pick(checks), "application/json")
    elseif op == "read" then
        count("read")
        local r = math.random(1, 4)
        if r == 1 then
            return req("GET", s)
        elseif r == 2 then
            return req("GET", s .. "/loss?limit=10")
        elseif r == 3 then
            return req("GET", s .. "/weights")
        end
        return req("GET", "/sessions?limit=5")
    elseif op == "delete" then
        count("delete")
        for i, v in ipairs(ready) do
            if v == s then
                table.remove(ready, i)
                break
            end
        end
        return req("DELETE", s)
    end
    count("malformed")
    local m = pick(malformed)
    local path = m[2]
    if path:sub(1, 1) == "S" then
        path = s .. path:sub(2)
    elseif path:sub(1, 1) == "U" then
        path = unknown_id() .. path:sub(2)
    else
        path = "/sessions" .. path
    end
    return req(m[1], path, m[4], m[3])
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
    responses = responses + 1
    if status == 201 then
        local loc = headers["location"] or headers["Location"]
        if loc then
            if #fresh + #ready >= 2 * POOL_CAP then
                table.insert(to_delete, loc)
            else
                table.insert(fresh, loc)
            end
        end
    end
    if responses >= max_requests then
        wrk.thread:stop()
    end
end

function done(summary, latency, requests)
    local out = assert(io.open(result_path, "w"))
    local by_status, by_op = {}, {}
    for _, t in ipairs(threads) do
        for k, v in pairs(t:get("statuses") or {}) do
            by_status[k] = (by_status[k] or 0) + v
        end
        for k, v in pairs(t:get("issued") or {}) do
            by_op[k] = (by_op[k] or 0) + v
        end
    end
    out:write(string.format("requests %d\n", summary.requests))
    out:write(string.format("duration_us %d\n", summary.duration))
    out:write(string.format("bytes %d\n", summary.bytes))
    for _, k in ipairs({ "connect", "read", "write", "timeout" }) do
        out:write(string.format("socket_error_%s %d\n", k, summary.errors[k]))
    end
    for _, p in ipairs({ 50, 90, 99, 99.9 }) do
        out:write(string.format("latency_p%s_us %d\n", tostring(p), latency:percentile(p)))
    end
    out:write(string.format("latency_max_us %d\n", latency.max))
    out:write(string.format("latency_mean_us %d\n", latency.mean))
    local keys = {}
    for k in pairs(by_status) do
        table.insert(keys, k)
    end
    table.sort(keys)
    for _, k in ipairs(keys) do
        out:write(string.format("status_%d %d\n", k, by_status[k]))
    end
    for k, v in pairs(by_op) do
        out:write(string.format("issued_%s %d\n", k, v))
    end
    out:close()
end
