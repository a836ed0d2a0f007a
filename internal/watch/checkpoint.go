package watch

import (
	"maps"
	"time"
)

// PointKey names a checkpoint: one subscriber's position in one stream. A subscription over
// several namespaces has one per namespace scope.
type PointKey struct {
	// Subscriber is Subscriber.Checkpoint.
	Subscriber string `json:"subscriber"`
	// Stream is the informer key (Key.String()).
	Stream string `json:"stream"`
}

// ExpectCheckpoints makes Subscribe wait until Restore (or Stop): subscribers must find the
// checkpoints of an earlier run. Call before any Subscribe.
func (r *Registry) ExpectCheckpoints() {
	r.restored = make(chan struct{})
}

// Restore hands over the checkpoints of an earlier run and lets Subscribe go on.
func (r *Registry) Restore(points map[PointKey]Point) {
	r.mu.Lock()
	maps.Copy(r.points, points)
	r.mu.Unlock()
	r.restoredOnce.Do(func() {
		select {
		case <-r.restored:
		default:
			close(r.restored)
		}
	})
}

// ReplacePoints puts points in the place of the restored checkpoints of the streams that
// match, which no subscriber has taken yet: a replica about to serve streams another one
// served reads where that one left them.
func (r *Registry) ReplacePoints(match func(stream string) bool, points map[PointKey]Point) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.points {
		if match(k.Stream) {
			delete(r.points, k)
		}
	}
	for k, p := range points {
		if match(k.Stream) {
			r.points[k] = p
		}
	}
}

// SaveSoon signals when checkpoints should be saved before the next interval: a subscriber
// got its first one, and a crash must not find it without.
func (r *Registry) SaveSoon() <-chan struct{} { return r.saveSoon }

func (r *Registry) checkpointSoon() {
	select {
	case r.saveSoon <- struct{}{}:
	default:
	}
}

// pointMaxAge bounds how long a loaded checkpoint nobody takes is kept (its subscription
// may have been deleted while no operator ran).
const pointMaxAge = 24 * time.Hour

// takePoints removes and returns the restored points of a stream, by subscriber. Called
// with mu held.
func (r *Registry) takePoints(stream string) map[string]Point {
	var out map[string]Point
	for k, p := range r.points {
		if k.Stream == stream {
			if out == nil {
				out = map[string]Point{}
			}
			out[k.Subscriber] = p
			delete(r.points, k)
		}
	}
	return out
}

// returnPoints takes back points whose resume window closed; a subscriber that brings one
// later is told its checkpoint could not be served.
func (r *Registry) returnPoints(stream string, points map[string]Point) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, p := range points {
		r.points[PointKey{Subscriber: name, Stream: stream}] = p
	}
}

// Forget drops a subscriber's checkpoints in every stream (its subscription is gone).
func (r *Registry) Forget(checkpoint string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.points {
		if k.Subscriber == checkpoint {
			delete(r.points, k)
		}
	}
	for _, inf := range r.informers {
		inf.mu.Lock()
		if inf.resume != nil {
			delete(inf.resume.waiting, checkpoint)
		}
		inf.mu.Unlock()
	}
}

// Checkpoints is where every checkpointed subscriber could resume from now in each of its
// streams, plus the restored checkpoints that no subscriber has taken yet.
func (r *Registry) Checkpoints() map[PointKey]Point {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[PointKey]Point{}
	cutoff := time.Now().Add(-pointMaxAge)
	for k, p := range r.points {
		if p.Time.After(cutoff) {
			out[k] = p
		}
	}
	for _, inf := range r.informers {
		inf.checkpoints(out)
	}
	return out
}

// checkpoints adds the points of the informer's subscribers to out.
func (i *informer) checkpoints(out map[PointKey]Point) {
	i.mu.Lock()
	defer i.mu.Unlock()
	stream := i.stream
	if i.resume != nil {
		for name, p := range i.resume.waiting {
			out[PointKey{Subscriber: name, Stream: stream}] = p
		}
	}
	for _, s := range i.subs {
		if s.Checkpoint == "" || s.Progress == nil || s.catchingUp {
			continue
		}
		pk := PointKey{Subscriber: s.Checkpoint, Stream: stream}
		initial, resync := s.Progress.pinned(stream)
		if initial {
			continue // a restart sends the initial events again: none may be lost
		}
		if resync && s.resumed() {
			out[pk] = s.point // a restart resyncs again until the resync is delivered
			continue
		}
		if !i.synced || s.resumeFrom == notJoinedYet {
			if s.resumed() {
				// not listed yet: what it came with still holds
				out[pk] = s.point
			}
			continue
		}
		rv, at := max(i.seen, s.resumeFrom), i.seenAt
		if oldest, openAt, ok := s.Progress.oldestOpen(stream); ok && oldest-1 < rv {
			rv, at = oldest-1, openAt
		}
		out[pk] = Point{Stream: stream, ResourceVersion: formatRV(rv), Time: at}
	}
}
