-- Argo CD health check for notify.dynamicnotifier.io/WatchSink and ClusterWatchSink
-- (the same status, the same script under both keys).
--
-- Progressing no status yet, status older than the spec (observedGeneration, or that of the
--             Ready or Delivering condition, behind metadata.generation), no Ready condition
--             yet, or Ready=Unknown (CheckFailing: its Secrets could not be read yet).
-- Degraded    Ready=False: the sink cannot be built (InvalidSink), or Delivering=False: some
--             subscriptions using it fail to deliver (DeliveryFailing). The message is the
--             condition's reason and message.
-- Healthy     Ready=True and Delivering True or Unknown: a valid sink no subscription uses
--             (Unused) is healthy. The message is Delivering's.
--
-- Written for Argo CD's sandbox: only the base, table and package libraries are loaded
-- (no string or math), and obj is the live object.
local hs = {}

local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local waiting = "Waiting for the operator to observe generation " .. tostring(generation)

local observed = obj.status.observedGeneration
if observed == nil or observed < generation then
  hs.status = "Progressing"
  hs.message = waiting
  return hs
end

local ready = nil
local delivering = nil
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    elseif condition.type == "Delivering" then
      delivering = condition
    end
  end
end

if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end

-- The conditions themselves may lag behind status.observedGeneration (delivering may be nil:
-- ipairs stops there).
for _, condition in ipairs({ready, delivering}) do
  if condition.observedGeneration ~= nil and condition.observedGeneration < generation then
    hs.status = "Progressing"
    hs.message = waiting
    return hs
  end
end

-- "Reason: message", or whichever of the two is set.
local function describe(condition)
  local reason = condition.reason
  local message = condition.message
  if reason == nil or reason == "" then
    return message
  end
  if message == nil or message == "" then
    return reason
  end
  return reason .. ": " .. message
end

if ready.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end

if ready.status ~= "True" then
  hs.status = "Progressing"
  hs.message = describe(ready)
  return hs
end

if delivering ~= nil and delivering.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(delivering)
  return hs
end

hs.status = "Healthy"
if delivering ~= nil and delivering.message ~= nil and delivering.message ~= "" then
  hs.message = delivering.message
else
  hs.message = ready.message
end
return hs
