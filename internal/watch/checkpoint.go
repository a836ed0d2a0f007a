package watch

import (
	"context"
	"maps"
	"time"
)

// pointMaxAge bounds how long a loaded checkpoint nobody takes is kept (its subscription
// may have been deleted while no operator ran).
const pointMaxAge = 24 * time.Hour

// saveSoonDelay gathers the new checkpoints of subscribers starting together into one save.
const saveSoonDelay = 250 * time.Millisecond

// Checkpointing makes the registry load checkpoints from store when it starts, save them
// every interval while they change, and on shutdown stop watching, give receivers up to
// grace to finish what they hold, and save a last time. Call before Start.
func (r *Registry) Checkpointing(store CheckpointStore, interval, grace time.Duration) {
	r.store, r.checkpointInterval, r.shutdownGrace = store, interval, grace
	r.loaded = make(chan struct{})
}

// takePoints removes and returns the loaded points of a stream. Called with mu held.
func (r *Registry) takePoints(stream string) map[string]Point {
	var out map[string]Point
	for name, p := range r.points {
		if p.Stream == stream {
			if out == nil {
				out = map[string]Point{}
			}
			out[name] = p
			delete(r.points, name)
		}
	}
	return out
}

// returnPoints takes back points whose resume window closed; a subscriber that brings one
// later is told its checkpoint could not be served.
func (r *Registry) returnPoints(points map[string]Point) {
	r.mu.Lock()
	defer r.mu.Unlock()
	maps.Copy(r.points, points)
}

// Forget drops a subscriber's checkpoint (its subscription is gone).
func (r *Registry) Forget(checkpoint string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.points, checkpoint)
	for _, inf := range r.informers {
		inf.mu.Lock()
		if inf.resume != nil {
			delete(inf.resume.waiting, checkpoint)
		}
		inf.mu.Unlock()
	}
}

// Checkpoints is where every checkpointed subscriber could resume from now, plus the
// checkpoints loaded at start that no subscriber has taken yet.
func (r *Registry) Checkpoints() map[string]Point {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]Point{}
	cutoff := time.Now().Add(-pointMaxAge)
	for name, p := range r.points {
		if p.Time.After(cutoff) {
			out[name] = p
		}
	}
	for _, inf := range r.informers {
		inf.checkpoints(out)
	}
	return out
}

// checkpoints adds the points of the informer's subscribers to out.
func (i *informer) checkpoints(out map[string]Point) {
	i.mu.Lock()
	defer i.mu.Unlock()
	stream := i.stream
	if i.resume != nil {
		maps.Copy(out, i.resume.waiting)
	}
	for _, s := range i.subs {
		if s.Checkpoint == "" || s.Progress == nil || s.catchingUp {
			continue
		}
		if !i.synced || s.resumeFrom == notJoinedYet {
			if s.resumed() {
				out[s.Checkpoint] = s.point // not listed yet: what it came with still holds
			}
			continue
		}
		rv, at := max(i.seen, s.resumeFrom), i.seenAt
		if oldest, openAt, ok := s.Progress.oldestOpen(stream); ok && oldest-1 < rv {
			rv, at = oldest-1, openAt
		}
		out[s.Checkpoint] = Point{Stream: stream, ResourceVersion: formatRV(rv), Time: at}
	}
}

// load reads the checkpoints, retrying until it works or ctx ends; the registry then runs
// without them rather than not at all.
func (r *Registry) load(ctx context.Context) {
	defer close(r.loaded)
	backoff := 500 * time.Millisecond
	deadline := time.Now().Add(time.Minute)
	for {
		points, err := r.store.Load(ctx)
		if err == nil {
			r.mu.Lock()
			maps.Copy(r.points, points)
			r.mu.Unlock()
			r.log.Info("Checkpoints loaded", "subscribers", len(points))
			return
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			r.log.Error(err, "Cannot load checkpoints; starting without them (changes made while stopped are not replayed)")
			return
		}
		r.log.V(1).Info("Loading checkpoints failed, retrying", "error", err.Error())
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// saveLoop saves checkpoints every interval while they change, until ctx ends.
func (r *Registry) saveLoop(ctx context.Context) map[string]Point {
	var last map[string]Point
	tick := time.NewTicker(r.checkpointInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return last
		case <-tick.C:
		case <-r.saveSoon:
			// Let a burst of starting subscribers share one write.
			select {
			case <-ctx.Done():
				return last
			case <-time.After(saveSoonDelay):
			}
		}
		last = r.save(ctx, last)
	}
}

// save writes the current checkpoints if they differ from last; it returns what is stored.
func (r *Registry) save(ctx context.Context, last map[string]Point) map[string]Point {
	now := r.Checkpoints()
	if samePoints(now, last) {
		return last
	}
	if err := r.store.Save(ctx, now); err != nil {
		if ctx.Err() == nil {
			// Once per outage at the default level; the retries at debug level.
			log := r.log.V(1)
			if !r.saveFailing {
				log = r.log
			}
			log.Info("Saving checkpoints failed; retrying at the next interval", "error", err.Error())
		}
		r.saveFailing = true
		return last
	}
	if r.saveFailing {
		r.log.Info("Saving checkpoints works again")
		r.saveFailing = false
	}
	return now
}

func samePoints(a, b map[string]Point) bool {
	return maps.EqualFunc(a, b, func(x, y Point) bool {
		return x.Stream == y.Stream && x.ResourceVersion == y.ResourceVersion
	})
}

// shutdown stops the reflectors, lets receivers finish what they hold for up to the grace
// period, and saves the checkpoints that leaves.
func (r *Registry) shutdown(last map[string]Point) {
	r.mu.Lock()
	infs := make([]*informer, 0, len(r.informers))
	for _, inf := range r.informers {
		inf.cancel()
		infs = append(infs, inf)
	}
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), r.shutdownGrace)
	defer cancel()
	for _, inf := range infs {
		select {
		case <-inf.done:
		case <-ctx.Done():
		}
	}
	drainers := map[Drainer]bool{}
	for _, inf := range infs {
		inf.mu.Lock()
		for _, s := range inf.subs {
			if d, ok := s.Receiver.(Drainer); ok {
				drainers[d] = true
			}
		}
		inf.mu.Unlock()
	}
	drained := 0
	results := make(chan bool, len(drainers))
	for d := range drainers {
		go func() { results <- d.Drain(ctx) }()
	}
	for range drainers {
		if <-results {
			drained++
		}
	}
	r.log.Info("Delivery drained for shutdown", "receivers", len(drainers), "drained", drained)
	saveCtx, cancelSave := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelSave()
	r.save(saveCtx, last)
}
