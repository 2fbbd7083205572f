-- wrk script: a one-sample predict on the session whose path is in $SESSION.
wrk.method = "POST"
wrk.path = os.getenv("SESSION") .. "/predict"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"x": [[[56, 231], [24, 1]]]}'
