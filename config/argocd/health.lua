-- Argo CD health check for notify.dynamicnotifier.io/WatchSubscription.
--
-- Suspended   spec.suspend is true, or Ready=False with reason Suspended.
-- Progressing no status yet, status older than the spec (observedGeneration behind
--             metadata.generation), no Ready condition yet, or Ready=Unknown (Starting, CheckFailing).
-- Healthy     Ready=True for the current generation: events are flowing.
-- Degraded    Ready=False: the condition's message says why (ResourceNotFound, Forbidden,
--             DeliveryFailing, ...).
--
-- Written for Argo CD's sandbox: only the base, table and package libraries are loaded
-- (no string or math), and obj is the live object.
local hs = {}

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Delivery is suspended by spec.suspend"
  return hs
end

local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local observed = obj.status.observedGeneration
if observed == nil or observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local ready = nil
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    end
  end
end

if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end

-- The condition itself may lag behind status.observedGeneration.
if ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local message = ready.message
if message == nil or message == "" then
  message = ready.reason
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message
  return hs
end

if ready.status == "False" then
  if ready.reason == "Suspended" then
    hs.status = "Suspended"
  else
    hs.status = "Degraded"
  end
  hs.message = message
  return hs
end

hs.status = "Progressing"
hs.message = message
return hs
