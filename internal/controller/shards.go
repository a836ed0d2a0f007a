package controller

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/checkpoint"
	"github.com/dynamic-notifier/dynamic-notifier/internal/membership"
	"github.com/dynamic-notifier/dynamic-notifier/internal/metrics"
	"github.com/dynamic-notifier/dynamic-notifier/internal/shard"
	"github.com/dynamic-notifier/dynamic-notifier/internal/subscription"
	"github.com/dynamic-notifier/dynamic-notifier/internal/watch"
)

// shardIndex indexes subscriptions by their shard key.
const shardIndex = "spec.resource.shardKey"

// minReleaseSave is the least time the checkpoint save of a release gets, even when the
// drain took the whole grace period: the save is what the next replica resumes from.
const minReleaseSave = 5 * time.Second

// shardKeyOf is the shard key of a resource: every stream of one resource (each namespace
// scope) and so every subscription reading it goes to one replica, which keeps sharing
// one watch per stream.
func shardKeyOf(gvr schema.GroupVersionResource) string {
	return shard.StreamKey(watch.Key{GVR: gvr}.String())
}

// Shards splits the subscriptions between the operator's replicas (--sharding=Leases).
// A replica serves the shard keys (resources) that shard.Assign over the live members and
// the subscribed resources gives it, once it holds their claim Leases; it reconciles, watches, delivers and
// writes the status of those subscriptions only.
//
// Handover: a replica that stops being the owner of a key stops its watches, drains its
// pipelines, saves their checkpoints and only then frees the claim; the new owner claims
// it, loads those checkpoints and starts. A replica that dies keeps its claims until its
// member Lease expires; the new owner then resumes from the last saved checkpoints.
type Shards struct {
	Membership *membership.Membership
	// Keeper saves and loads checkpoints; nil without checkpoints.
	Keeper *checkpoint.Keeper
	// Grace bounds a release's drain.
	Grace time.Duration
	// Period is how often assignments are looked at besides membership changes.
	Period time.Duration
	Cache  cache.Cache
	Log    logr.Logger

	r *WatchSubscriptionReconciler
	// gate orders reconciles (readers) against releases: a release waits for the
	// reconciles of keys it takes away, and none starts anything for them after.
	gate sync.RWMutex
	mu   sync.Mutex
	// serving are the keys this replica holds and has loaded the checkpoints of;
	// releasing those being handed over; unreleased those whose claim is still to free.
	serving, releasing, unreleased map[string]bool
	wake                           chan struct{}
}

// NewShards returns the coordinator of a replica; SetupWithManager of the reconciler
// binds it.
func NewShards(m *membership.Membership, keeper *checkpoint.Keeper, grace, period time.Duration, c cache.Cache,
	log logr.Logger) *Shards {
	return &Shards{Membership: m, Keeper: keeper, Grace: grace, Period: period, Cache: c, Log: log,
		serving: map[string]bool{}, releasing: map[string]bool{}, unreleased: map[string]bool{},
		wake: make(chan struct{}, 1)}
}

// Name is this replica's name.
func (s *Shards) Name() string { return s.Membership.Name() }

// Wake asks for a look at the assignments (members changed).
func (s *Shards) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Owns tells whether this replica writes the checkpoints of stream: it serves it or is
// handing it over.
func (s *Shards) Owns(stream string) bool {
	key := shard.StreamKey(stream)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serving[key] || s.releasing[key]
}

// enter lets a reconcile of a subscription on key go on while no release of the key runs;
// served tells whether this replica serves it. Call done when the reconcile ends.
func (s *Shards) enter(key string) (served bool, done func()) {
	s.gate.RLock()
	s.mu.Lock()
	served = s.serving[key]
	s.mu.Unlock()
	return served, s.gate.RUnlock
}

// releasing tells whether key is being handed over.
func (s *Shards) isReleasing(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.releasing[key]
}

// NeedLeaderElection: in the group of the checkpoint keeper and the membership (see
// membership.Membership.NeedLeaderElection); sharding runs without leader election.
func (s *Shards) NeedLeaderElection() bool { return true }

// Start balances until ctx ends. The final handover (every key at once) happens in
// Finish, after the keeper's last save.
func (s *Shards) Start(ctx context.Context) error {
	if s.Cache != nil && !s.Cache.WaitForCacheSync(ctx) {
		return nil
	}
	tick := time.NewTicker(s.Period)
	defer tick.Stop()
	for {
		s.balance(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-s.wake:
		}
	}
}

// balance releases the keys this replica should no longer serve and claims those it
// should.
func (s *Shards) balance(ctx context.Context) {
	members := s.Membership.Members()
	me := s.Name()
	if !slices.Contains(members, me) {
		return // not joined yet
	}
	list := &notifyv1.WatchSubscriptionList{}
	if err := s.r.List(ctx, list); err != nil {
		s.Log.V(1).Info("Listing subscriptions failed", "error", err.Error())
		return
	}
	wanted := map[string]bool{}
	for i := range list.Items {
		wanted[shardKeyOf(subscription.GVR(&list.Items[i]))] = true
	}
	owners := shard.Assign(members, slices.Collect(maps.Keys(wanted)))
	holders, err := s.Membership.Holders(ctx)
	if err != nil {
		s.Log.V(1).Info("Reading the claims failed", "error", err.Error())
		return
	}
	s.dropLost(holders)
	var release, claim, free []string
	s.mu.Lock()
	for k := range s.serving {
		if owners[k] != me {
			release = append(release, k)
		}
	}
	for k := range wanted {
		if !s.serving[k] && !s.releasing[k] && owners[k] == me {
			claim = append(claim, k)
		}
	}
	for k := range s.unreleased {
		if !slices.Contains(claim, k) {
			free = append(free, k)
		}
	}
	s.mu.Unlock()
	if len(release) > 0 {
		s.release(ctx, release)
	}
	if len(free) > 0 {
		s.free(context.WithoutCancel(ctx), free)
	}
	if len(claim) > 0 && ctx.Err() == nil {
		s.claim(ctx, claim)
	}
	s.mu.Lock()
	served := len(s.serving)
	s.mu.Unlock()
	metrics.Shards(me, served, len(members))
}

// dropLost stops serving, at once and without saving, the keys whose claim another replica
// holds: it took them from this one (its member Lease looked expired, as after a long
// pause) and has loaded their checkpoints, which this one must not overwrite.
func (s *Shards) dropLost(holders map[string]string) {
	var lost []string
	s.gate.Lock()
	s.mu.Lock()
	for k := range s.serving {
		if h := holders[k]; h != s.Name() {
			lost = append(lost, k)
			delete(s.serving, k)
		}
	}
	s.mu.Unlock()
	s.gate.Unlock()
	if len(lost) == 0 {
		return
	}
	set := map[string]bool{}
	for _, k := range lost {
		set[k] = true
	}
	for _, nn := range s.r.running.using(func(k watch.Key) bool { return set[shardKeyOf(k.GVR)] }) {
		s.r.letGo(nn)
	}
	s.Log.Info("Lost shards to another replica; stopped serving them", "shards", lost, "holders", holders)
}

// claim takes the claims of keys that are free or whose holder is gone, loads their
// checkpoints and starts their subscriptions.
func (s *Shards) claim(ctx context.Context, keys []string) {
	got := map[string]string{} // key -> previous holder
	for _, k := range keys {
		prev, err := s.Membership.Claim(ctx, k)
		if err != nil {
			if !errors.Is(err, membership.ErrHeld) {
				s.Log.V(1).Info("Claiming a shard failed; retrying", "shard", k, "error", err.Error())
			}
			continue // its holder hands it over first, or its Lease expires
		}
		got[k] = prev
	}
	if len(got) == 0 {
		return
	}
	if s.Keeper != nil {
		if err := s.Keeper.Load(ctx, func(stream string) bool { _, ok := got[shard.StreamKey(stream)]; return ok }); err != nil {
			// Keep the claims; the next round claims (ours already) and loads again.
			s.Log.Info("Loading checkpoints for new shards failed; retrying", "error", err.Error())
			return
		}
	}
	s.mu.Lock()
	for k := range got {
		s.serving[k] = true
		delete(s.unreleased, k)
	}
	s.mu.Unlock()
	metrics.ShardMoved(s.Name(), "acquired", len(got))
	for _, k := range slices.Sorted(maps.Keys(got)) {
		s.Log.Info("Serving shard", "shard", k, "previousHolder", got[k])
		for _, req := range s.r.subscriptionsBy(ctx, shardIndex, k) {
			s.r.wakeups.Now(req.NamespacedName)
		}
	}
}

// release hands keys over: their watches stop, their pipelines drain, their checkpoints are
// saved, then they are torn down and their claims freed for the new owner.
func (s *Shards) release(ctx context.Context, keys []string) {
	started := time.Now()
	set := map[string]bool{}
	s.gate.Lock() // waits for the reconciles of these keys in flight
	s.mu.Lock()
	for _, k := range keys {
		set[k] = true
		delete(s.serving, k)
		s.releasing[k] = true
	}
	s.mu.Unlock()
	s.gate.Unlock()

	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.Grace)
	defer cancel()
	inKeys := func(k watch.Key) bool { return set[shardKeyOf(k.GVR)] }
	subs := s.r.running.using(inKeys)
	stopped := s.r.Registry.StopWatchingSome(ctx, inKeys)
	pipelines, drained := s.r.running.drainSome(ctx, subs)
	saved := true
	if s.Keeper != nil {
		saveCtx, cancelSave := context.WithTimeout(context.WithoutCancel(ctx), max(time.Until(started.Add(s.Grace)), minReleaseSave))
		saved = s.Keeper.SaveNow(saveCtx)
		cancelSave()
	}
	s.mu.Lock()
	for k := range set {
		delete(s.releasing, k)
		s.unreleased[k] = true
	}
	s.mu.Unlock()
	for _, nn := range subs {
		s.r.letGo(nn)
	}
	freeCtx, cancelFree := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancelFree()
	s.free(freeCtx, keys)
	metrics.ShardMoved(s.Name(), "released", len(keys))
	s.Log.Info("Handed shards over", "shards", keys, "subscriptions", len(subs), "watchesStopped", stopped,
		"pipelines", pipelines, "drained", drained, "checkpointsSaved", saved,
		"took", time.Since(started).Round(time.Millisecond))
}

// free frees the claims of keys; those that fail are tried again next round.
func (s *Shards) free(ctx context.Context, keys []string) {
	for _, k := range keys {
		if err := s.Membership.Release(ctx, k); err != nil {
			s.Log.Info("Freeing a shard's claim failed; retrying", "shard", k, "error", err.Error())
			continue
		}
		s.mu.Lock()
		delete(s.unreleased, k)
		s.mu.Unlock()
	}
}

// Finish is the end of a replica that stops: after the keeper's last save it frees every
// claim, so the others start at once from those checkpoints, and leaves.
func (s *Shards) Finish() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.gate.Lock()
	s.mu.Lock()
	keys := slices.Collect(maps.Keys(s.serving))
	keys = append(keys, slices.Collect(maps.Keys(s.releasing))...)
	keys = append(keys, slices.Collect(maps.Keys(s.unreleased))...)
	clear(s.serving)
	s.mu.Unlock()
	s.gate.Unlock()
	s.free(ctx, keys)
	s.Log.Info("Left", "shardsFreed", len(keys))
	s.Membership.Leave(ctx)
}

// notServed handles a subscription this replica does not serve: what still runs for it
// here stops, unless a handover of its key is under way (that one stops it after the
// drain). This is a subscription whose resource changed to one another replica serves.
func (r *WatchSubscriptionReconciler) notServed(nn types.NamespacedName) {
	keys, ok := r.running.keysOf(nn)
	if !ok || len(keys) == 0 || r.Shards.isReleasing(shardKeyOf(keys[0].GVR)) {
		return
	}
	r.letGo(nn)
}

// letGo stops what runs for a subscription another replica serves now, and drops its
// counters and metrics: that replica counts on from the status.
func (r *WatchSubscriptionReconciler) letGo(nn types.NamespacedName) {
	r.running.teardown(nn, true)
	r.retries.reset(nn)
	r.wakeups.forget(nn)
	r.written.forget(nn)
	metrics.Forget(nn.Namespace, nn.Name)
}
