package checkpoint

import (
	"context"
	"maps"
	"math"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/dynamic-notifier/dynamic-notifier/internal/watch"
)

// saveSoonDelay gathers the new checkpoints of subscribers starting together into one save.
const saveSoonDelay = 250 * time.Millisecond

// minLastSave is the least time the last save gets on shutdown, even when draining took
// the whole grace period: the save is what makes the drain worth anything.
const minLastSave = 5 * time.Second

// loadDeadline bounds how long a starting operator retries reading checkpoints before it
// runs without them rather than not at all.
const loadDeadline = time.Minute

// Keeper restores the registry's checkpoints when the operator starts (as leader), saves
// them every Interval while they change, and on shutdown stops the watches, lets delivery
// finish what it holds for up to Grace, saves a last time and stops the registry. It is a
// manager Runnable and owns the registry's end.
type Keeper struct {
	Registry *watch.Registry
	Store    Store
	Interval time.Duration
	Grace    time.Duration
	// Drain waits until the events handed to subscribers are finished with, or ctx ends; it
	// reports how many pipelines there were and how many finished.
	Drain func(ctx context.Context) (pipelines, drained int)
	// Owns, when set, limits what this keeper saves to the streams its replica serves
	// (scale-out); the Store must merge likewise. Nothing is loaded at start then: Load reads
	// the checkpoints of streams as the replica comes to serve them.
	Owns func(stream string) bool
	// AfterShutdown is called once the last checkpoints are saved, or could not be.
	AfterShutdown func()
	Log           logr.Logger

	mu          sync.Mutex // one save at a time
	last        map[watch.PointKey]watch.Point
	saveFailing bool
}

// NewKeeper returns a keeper for reg; from now on subscribers wait for the restore.
func NewKeeper(reg *watch.Registry, store Store, interval, grace time.Duration, log logr.Logger) *Keeper {
	reg.ExpectCheckpoints()
	return &Keeper{Registry: reg, Store: store, Interval: interval, Grace: grace, Log: log}
}

// NeedLeaderElection: only the leader watches, delivers and writes checkpoints. Without
// leader election (scale-out) it runs on every replica.
func (k *Keeper) NeedLeaderElection() bool { return true }

// Start runs until ctx ends, then shuts the registry down within the grace period.
func (k *Keeper) Start(ctx context.Context) error {
	if k.Owns != nil {
		k.Registry.Restore(nil) // streams wait for Load instead
	} else {
		k.restore(ctx)
	}
	k.saveLoop(ctx)
	k.shutdown()
	if k.AfterShutdown != nil {
		k.AfterShutdown()
	}
	return nil
}

// Load reads the stored checkpoints of the streams that match and hands them to the
// registry in the place of any it had: call it before serving those streams, after their
// previous replica saved them.
func (k *Keeper) Load(ctx context.Context, match func(stream string) bool) error {
	points, err := k.Store.Load(ctx)
	if err != nil {
		return err
	}
	k.Registry.ReplacePoints(match, points)
	return nil
}

// SaveNow saves the checkpoints at once; false when they could not be saved.
func (k *Keeper) SaveNow(ctx context.Context) bool { return k.save(ctx) }

// restore reads the checkpoints, retrying until it works, ctx ends or loadDeadline passes.
func (k *Keeper) restore(ctx context.Context) {
	backoff := wait.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: math.MaxInt32, Cap: 5 * time.Second}
	deadline := time.Now().Add(loadDeadline)
	for {
		points, err := k.Store.Load(ctx)
		if err == nil {
			k.Registry.Restore(points)
			k.Log.Info("Checkpoints loaded", "points", len(points))
			return
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			k.Registry.Restore(nil)
			k.Log.Error(err, "Cannot load checkpoints; starting without them (changes made while stopped are not replayed)")
			return
		}
		k.Log.V(1).Info("Loading checkpoints failed, retrying", "error", err.Error())
		select {
		case <-ctx.Done():
		case <-time.After(backoff.Step()):
		}
	}
}

// saveLoop saves checkpoints every interval while they change, until ctx ends.
func (k *Keeper) saveLoop(ctx context.Context) {
	tick := time.NewTicker(k.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-k.Registry.SaveSoon():
			// Let a burst of starting subscribers share one write.
			select {
			case <-ctx.Done():
				return
			case <-time.After(saveSoonDelay):
			}
		}
		k.save(ctx)
	}
}

// save writes the current checkpoints if they differ from the last saved; false when they
// could not be written.
func (k *Keeper) save(ctx context.Context) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	last := k.last
	now := k.Registry.Checkpoints()
	if k.Owns != nil {
		maps.DeleteFunc(now, func(pk watch.PointKey, _ watch.Point) bool { return !k.Owns(pk.Stream) })
	}
	if samePoints(now, last) {
		return true
	}
	if err := k.Store.Save(ctx, now); err != nil {
		if ctx.Err() == nil {
			// Once per outage at the default level; the retries at debug level.
			log := k.Log.V(1)
			if !k.saveFailing {
				log = k.Log
			}
			log.Info("Saving checkpoints failed; retrying at the next interval", "error", err.Error())
		}
		k.saveFailing = true
		return false
	}
	if k.saveFailing {
		k.Log.Info("Saving checkpoints works again")
		k.saveFailing = false
	}
	k.last = now
	return true
}

func samePoints(a, b map[watch.PointKey]watch.Point) bool {
	return maps.EqualFunc(a, b, func(x, y watch.Point) bool { return x.ResourceVersion == y.ResourceVersion })
}

// shutdown stops the watches, lets delivery finish what it holds and saves the checkpoints
// that leaves; each step is bounded by what is left of the grace period, and each that
// cannot finish says so, so the operator always ends in time.
func (k *Keeper) shutdown() {
	started := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), k.Grace)
	defer cancel()
	defer k.Registry.Stop()
	if !k.Registry.StopWatching(ctx) {
		k.Log.Info("Watches did not stop within the shutdown grace period; saving checkpoints as they are",
			"grace", k.Grace)
	} else if k.Drain != nil {
		pipelines, drained := k.Drain(ctx)
		k.Log.Info("Delivery drained for shutdown", "pipelines", pipelines, "drained", drained,
			"took", time.Since(started).Round(time.Millisecond))
	}
	saveCtx, cancelSave := context.WithTimeout(context.Background(), max(time.Until(started.Add(k.Grace)), minLastSave))
	defer cancelSave()
	if !k.save(saveCtx) {
		k.Log.Info("The last checkpoints could not be saved; the next operator resumes from the ones saved before")
		return
	}
	k.Log.Info("Checkpoints saved for shutdown")
}
