-- wrk script: signed GitHub deliveries, each with its own X-GitHub-Delivery id, so every one is
-- stored (none is answered as a redelivery). The body and its signature are prepared by
-- bench/ingest.sh: the signature covers the body only, so one signature serves every request.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  body = io.open(args[1], "rb"):read("a")
  signature = args[2]
  kind = args[3]
  prefix = string.format("%d-%d-", os.time(), tid)
end

function request()
  counter = counter + 1
  return wrk.format("POST", "/webhooks/github", {
    ["Content-Type"] = "application/json",
    ["X-GitHub-Event"] = kind,
    ["X-GitHub-Delivery"] = prefix .. counter,
    ["X-Hub-Signature-256"] = signature,
  }, body)
end

function done(summary, latency, requests)
  io.write(string.format("statuses: %d requests, %d errors (non-2xx %d)\n",
    summary.requests, summary.errors.status + summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout, summary.errors.status))
  for _, p in pairs({ 50, 90, 99, 99.9 }) do
    io.write(string.format("p%s %.2f ms\n", p, latency:percentile(p) / 1000))
  end
end
