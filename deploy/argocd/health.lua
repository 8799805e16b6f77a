-- Argo CD health check for settings-controller's kinds (integrations.igny8.com:
-- GlobalIntegrationSettings, Account, IntegrationSettings). It reads the
-- conditions kstatus reads, so Argo CD and Flux agree:
--   a generation the operator has not observed yet, or Reconciling=True -> Progressing
--   Stalled=True (a spec error only a spec change fixes)                 -> Degraded
--   Ready=True                                                           -> Healthy
-- Argo CD runs it with only the base, package and table libraries.
local hs = {}
local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for settings-controller to report a status"
  return hs
end
if obj.metadata.generation ~= nil and status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for settings-controller to observe generation " .. obj.metadata.generation
  return hs
end
local found = {}
for _, condition in ipairs(status.conditions) do
  found[condition.type] = condition
end
local function said(condition)
  return (condition.reason or "") .. ": " .. (condition.message or "")
end
if found.Stalled ~= nil and found.Stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = said(found.Stalled)
  return hs
end
if found.Reconciling ~= nil and found.Reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = said(found.Reconciling)
  return hs
end
if found.Ready ~= nil and found.Ready.status == "True" then
  hs.status = "Healthy"
  hs.message = said(found.Ready)
  return hs
end
hs.status = "Progressing"
if found.Ready ~= nil then
  hs.message = said(found.Ready)
else
  hs.message = "Waiting for a Ready condition"
end
return hs
