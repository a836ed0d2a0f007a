// Package watch is the registry of shared watches. It runs one informer per distinct
// (resource, namespace scope) among the active subscriptions, fans each change out to the
// subscribers whose filters match, starts an informer with its first subscriber and stops it
// with its last. It knows nothing about sinks: subscribers receive events through a Receiver
// that must not block.
//
// Where each concern lives:
//
//	registry.go   the registry: keys, subscribe and resubscribe, reference counting
//	informer.go   one informer's state and lifecycle
//	reflector.go  the client-go reflector feeding it, its backoff and quiet logs
//	list.go       lists streamed into the view a page at a time, finished by Replace
//	client.go     the dynamic client and its brief retries of transient failures
//	view.go       the lean view (uid, resourceVersion, labels per object) and the changes
//	              it turns list and watch events into; hash.go fingerprints objects for it
//	fanout.go     subscribers, filter groups and handing events to them
//	initial.go    initial events for subscribers that ask for them
//	olds.go       full old objects, kept only while a subscriber needs them
//	resume.go     resuming from checkpoints: replay, gaps, resync events
//	checkpoint.go where each subscriber could resume from; progress.go which of its events
//	              are still open; buffer.go the bounded buffer of events waiting for someone
//
// Loading and saving checkpoints, and the shutdown that drains delivery first, are the
// checkpoint package's (checkpoint.Keeper); this package only tells where each subscriber
// could resume from (Registry.Checkpoints) and takes them back (Registry.Restore).
//
// # Resource versions
//
// Resource versions are compared as numbers, as etcd issues them; a non-numeric one is
// delivered but never checkpointed. The positions kept, each in one place:
//
//	informer.listRV        the resourceVersion of the informer's last list.
//	informer.seen, seenAt  how far the stream has been handed to subscribers (every event
//	                       and bookmark advances it); a subscriber's checkpoint when none
//	                       of its events is open, and about when that was.
//	informer.viewRV        the last change applied to the view: where an exact list of old
//	                       objects is taken (olds.go).
//	resumeState.from       the oldest checkpoint among the subscribers being resumed: the
//	                       watch starts there (fromTime: about when it was current).
//	resumeState.lastReplayed  the newest change replayed so far; a re-list after a gap
//	                       sends what changed since.
//	subscriber.resumeFrom  replayed changes at or below it are not for this subscriber (its
//	                       checkpoint, or where the stream was when it joined; notJoinedYet
//	                       until the first list says).
//	subscriber.floor       changes at or below it were in its initial list.
//	subscriber.point       the checkpoint it resumed from (zero when it did not resume).
//	Point.ResourceVersion  a checkpoint: every change up to it was handed to the subscriber
//	                       and finished with; Progress holds it below the oldest open one.
package watch
