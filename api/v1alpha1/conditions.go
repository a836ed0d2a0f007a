package v1alpha1

// ConditionReady is the one condition a WatchSubscription reports.
const ConditionReady = "Ready"

// Reasons of the Ready condition. True: ReasonWatching. Unknown: ReasonStarting. False: the rest.
const (
	ReasonWatching    = "Watching"
	ReasonStarting    = "Starting"
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonInvalidFilter: spec.filter does not compile to a bool CEL expression.
	ReasonInvalidFilter    = "InvalidFilter"
	ReasonResourceNotFound = "ResourceNotFound"
	ReasonNotWatchable     = "NotWatchable"
	ReasonForbidden        = "Forbidden"
	ReasonSuspended        = "Suspended"
	ReasonDeliveryFailing  = "DeliveryFailing"
	ReasonWatchFailing     = "WatchFailing"
	// ReasonInvalidSink: a Secret the sink needs (headers, CA) is missing or unusable.
	ReasonInvalidSink = "InvalidSink"
	// ReasonSinkNotFound: spec.sinkRef names a WatchSink or ClusterWatchSink that does not
	// exist (yet).
	ReasonSinkNotFound = "SinkNotFound"
	// ReasonSinkNotAdmitted: spec.sinkRef names a ClusterWatchSink whose namespaceSelector
	// does not admit the subscription's namespace.
	ReasonSinkNotAdmitted = "SinkNotAdmitted"
	// ReasonInvalidTemplate: spec.payload.template (or the sink's) does not compile.
	ReasonInvalidTemplate = "InvalidTemplate"
	// ReasonCheckFailing (Unknown): a check the operator must make before it starts a
	// subscription (authorization, the sink's Secrets, discovery) got no answer from the
	// API server; it is retried with backoff. A subscription already running keeps running
	// on the last answer and says so in its message instead.
	ReasonCheckFailing = "CheckFailing"
	// ReasonFilterOverBudget: spec.filter cost more than its budget for some change within
	// the last minute; those changes were not delivered.
	ReasonFilterOverBudget = "FilterOverBudget"
	// ReasonEventsDropped: the delivery queue overflowed recently; the sink is slower than
	// the changes.
	ReasonEventsDropped = "EventsDropped"
)

// Event reasons that are not Ready reasons.
const (
	// EventReasonResynced: the subscription could not resume from its checkpoint; changes
	// were re-listed and an io.dynamicnotifier.resync event was delivered.
	EventReasonResynced = "Resynced"
	// EventReasonMoved: another operator replica serves the subscription now (scale-out:
	// replicas joined or left); it resumed from the checkpoint the previous one saved.
	EventReasonMoved = "Moved"
)
