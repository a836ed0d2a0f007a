package watch

import (
	"math"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/dynamic-notifier/dynamic-notifier/internal/event"
)

// Point is a checkpoint: the subscriber has been handed, and has finished with, every change
// of the stream up to and including ResourceVersion.
type Point struct {
	// Stream is the informer key (Key.String()) the point belongs to.
	Stream string `json:"stream"`
	// ResourceVersion is a resourceVersion of the stream's resource.
	ResourceVersion string `json:"resourceVersion"`
	// Time is about when ResourceVersion was current; it tells objects created after the
	// checkpoint from older ones when the gap has to be re-listed.
	Time time.Time `json:"time"`
}

// Before tells whether p is the earlier of two points of one stream: by resourceVersion
// when both are numbers, else by time.
func (p Point) Before(q Point) bool {
	x, okX := parseRV(p.ResourceVersion)
	y, okY := parseRV(q.ResourceVersion)
	if okX && okY {
		return x < y
	}
	return p.Time.Before(q.Time)
}

// ResumeWindow is how long a restarted informer keeps the changes it replayed for
// subscribers that have a checkpoint but have not joined yet (their subscription is still
// being reconciled); later joiners get a Resync event instead.
const ResumeWindow = 2 * time.Minute

// resumeBufferLimit bounds the changes kept for late joiners during the resume window.
const resumeBufferLimit = 20000

// Resync reasons.
const (
	// ResyncWatchExpired: the API server could no longer serve the watch from the
	// checkpoint (410 Gone) or the watch broke before the replay was complete.
	ResyncWatchExpired = "WatchExpired"
	// ResyncCheckpointUnavailable: the subscriber joined after the resume window closed or
	// its changes did not fit in the resume buffer.
	ResyncCheckpointUnavailable = "CheckpointUnavailable"
)

// ResyncReasons are all resync reasons.
var ResyncReasons = []string{ResyncWatchExpired, ResyncCheckpointUnavailable}

// notJoinedYet marks a fresh subscriber whose position is set by the first list.
const notJoinedYet = math.MaxUint64

// resumeState is a restarted informer catching up from the oldest checkpoint among its
// subscribers: it lists (to know the present), then watches from the checkpoint so every
// change made since arrives in order; those at or below the list's resourceVersion are
// replayed to the subscribers whose checkpoint is older than them.
type resumeState struct {
	from     uint64
	fromTime time.Time
	// waiting are the checkpointed subscribers that have not joined yet, by checkpoint name.
	waiting map[string]Point
	// replaying is true until the stream passes the first list's resourceVersion.
	replaying    bool
	lastReplayed uint64
	// gap is set when the replay could not be completed (ResyncWatchExpired).
	gap bool
	// buffer keeps what was fanned out, for subscribers still waiting.
	buffer overflowBuffer
	timer  *time.Timer
}

// startResume prepares the informer to resume from the points of its waiting subscribers.
// Called before the reflector starts.
func (i *informer) startResume(points map[string]Point) {
	if len(points) == 0 {
		return
	}
	rs := &resumeState{from: math.MaxUint64, waiting: points, buffer: newOverflowBuffer(resumeBufferLimit)}
	for _, p := range points {
		rv, _ := parseRV(p.ResourceVersion)
		if rv < rs.from {
			rs.from, rs.fromTime = rv, p.Time
		}
	}
	i.resume = rs
	rs.timer = time.AfterFunc(ResumeWindow, i.endResumeWindow)
}

// endResumeWindow drops what was kept for subscribers that never joined.
func (i *informer) endResumeWindow() {
	i.mu.Lock()
	var waiting map[string]Point
	if i.resume != nil && len(i.resume.waiting) > 0 {
		waiting = i.resume.waiting
		i.log.Info("Resume window closed; subscribers that join later get a resync event",
			"waiting", len(waiting))
	}
	i.closeResume()
	i.mu.Unlock()
	if waiting != nil {
		i.reg.returnPoints(i.stream, waiting)
	}
}

// closeResume ends the resume window: the buffer goes, and subscribers that join later get
// a Resync event. Called with mu held.
func (i *informer) closeResume() {
	if i.resume == nil {
		return
	}
	if i.resume.timer != nil {
		i.resume.timer.Stop()
	}
	i.resume.waiting = nil
	i.resume.buffer.reset()
	i.settleResume()
}

// settleResume forgets the resume state once it serves nothing more: listed, the replay
// over (or never needed), and no checkpointed subscriber expected. Called with mu held.
func (i *informer) settleResume() {
	if rs := i.resume; rs != nil && i.synced && !rs.replaying && len(rs.waiting) == 0 {
		i.resume = nil
	}
}

func formatRV(rv uint64) string { return strconv.FormatUint(rv, 10) }

// watchFrom is where the reflector's next watch starts: the checkpoint instead of the first
// list's resourceVersion while nothing of the replay has arrived yet.
func (i *informer) watchFrom(requested string) string {
	i.mu.Lock()
	defer i.mu.Unlock()
	rs := i.resume
	if rs == nil || !rs.replaying || rs.lastReplayed != 0 || requested != formatRV(i.listRV) {
		return requested
	}
	return formatRV(rs.from)
}

// joinResume hands a subscriber waiting in the resume state (add found its checkpoint
// there) what it missed. Called with mu held.
func (i *informer) joinResume(s *subscriber) {
	rs := i.resume
	delete(rs.waiting, s.Checkpoint)
	if rs.buffer.overflowed {
		i.offerResync(s, ResyncCheckpointUnavailable, s.point.ResourceVersion)
	} else {
		for _, ev := range rs.buffer.events {
			i.offerIfMatching(s, ev)
		}
		if rs.gap {
			i.offerResync(s, ResyncWatchExpired, s.point.ResourceVersion)
		}
	}
	if len(rs.waiting) == 0 {
		i.closeResume()
	}
}

// keepForWaiting buffers ev for subscribers that have not joined yet. Called with mu held.
func (i *informer) keepForWaiting(ev *event.Event) {
	rs := i.resume
	if rs == nil || len(rs.waiting) == 0 {
		return
	}
	rs.buffer.add(ev)
}

// offerResync tells s that changes or deletions since its checkpoint may be missing.
func (i *informer) offerResync(s *subscriber, reason, checkpoint string) {
	info := event.ResyncInfo{Reason: reason, Checkpoint: checkpoint, Namespace: i.key.Namespace,
		ResourceVersion: formatRV(max(i.listRV, i.seen)), DeletionsMayBeMissing: true}
	i.log.Info("Resyncing subscriber", "subscriber", s.ID, "reason", reason, "checkpoint", checkpoint)
	if s.OnResync != nil {
		s.OnResync(info)
	}
	s.receive(event.NewResync(i.key.GVR, i.stream, s.Checkpoint, info))
}

// replayed reports whether a watch event is part of the replay (at or below the first
// list). Called with mu held.
func (i *informer) advanceReplay(rv uint64, ok bool) bool {
	rs := i.resume
	if rs == nil || !rs.replaying {
		return false
	}
	if ok && rv <= i.listRV {
		rs.lastReplayed = rv
		return true
	}
	rs.replaying = false
	i.settleResume()
	return false
}

// gapChange turns an object of a list taken while the replay was incomplete into the
// change it implies for resumed subscribers, if it changed since the replay stopped: Added
// when created after the checkpoint, Updated otherwise. It reports whether it did (the list's
// own diff then skips the object). Called with mu held.
func (i *informer) gapChange(u *unstructured.Unstructured, l *listing) bool {
	rv, ok := parseRV(u.GetResourceVersion())
	if ok && rv <= l.since {
		return false
	}
	t := event.Updated
	if !u.GetCreationTimestamp().Time.Before(l.fromTime.Truncate(time.Second)) {
		t = event.Added
	}
	ev := i.newEvent(t, u, rv)
	ev.Replayed = true
	i.fanOut(ev)
	return true
}

// gapFinished ends a replay that a list had to complete: deletions in the gap cannot be
// known, so every resumed subscriber gets a Resync. Called with mu held, before the
// informer moves to the list's resourceVersion.
func (i *informer) gapFinished() {
	rs := i.resume
	rs.replaying, rs.gap = false, true
	for _, s := range i.subs {
		if s.resumed() {
			i.offerResync(s, ResyncWatchExpired, s.point.ResourceVersion)
		}
	}
}
