// Package membership keeps the operator's replicas in Kubernetes Leases: each replica
// holds a Lease of its own, renewed while it runs, and the live members are the Leases
// renewed within their duration. Work is claimed per shard key with a Lease whose holder
// is the serving replica, written with the API server's optimistic concurrency: a claim
// goes to a new holder only when it is free (released after a drain and a checkpoint) or
// its holder's member Lease has expired. No consensus of our own: the API server decides
// which write wins.
package membership

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const (
	// LabelComponent marks the Leases: "member" for a replica's own, "shard" for a claim.
	LabelComponent = "app.kubernetes.io/component"
	labelName      = "app.kubernetes.io/name"
	// AnnotationShard holds a claim's shard key (Lease names cannot hold every key).
	AnnotationShard = "dynamicnotifier.io/shard"

	componentMember = "member"
	componentShard  = "shard"
	appName         = "dynamic-notifier"
)

// Options configure a Membership; Client, Namespace and Name are required.
type Options struct {
	// Client reads and writes Leases, uncached.
	Client    client.Client
	Namespace string
	// Name is this replica's identity (the pod name); its Lease is <Prefix>-member-<Name>.
	Name string
	// Prefix starts every Lease's name; "dynamic-notifier" when empty.
	Prefix string
	// Duration is how long a member stays live without renewing (15s when zero).
	Duration time.Duration
	// RenewDeadline is how long renewing may fail before this replica gives up its place
	// (Start returns an error); shorter than Duration (10s when zero).
	RenewDeadline time.Duration
	// RetryPeriod is how often the Lease is renewed and the members are read (2s when zero).
	RetryPeriod time.Duration
	// LeaveTimeout bounds how long Start keeps renewing after its context ended while the
	// replica hands its work over; Leave ends it sooner (a minute when zero).
	LeaveTimeout time.Duration
	// OnChange is called, from Start's goroutine, when the live members changed.
	OnChange func(members []string)
	Log      logr.Logger
}

// Membership is this replica's place among the others. A manager Runnable on every
// replica (no leader election).
type Membership struct {
	opts Options

	mu      sync.Mutex
	members []string
	// seen is when each member's renewTime was last seen to change, on our clock: a member
	// is live while that is within its duration, whatever the clocks of the others say.
	seen   map[string]observed
	joined bool

	left     chan struct{}
	leftOnce sync.Once
	// renewing keeps a renewal and Leave apart: a renewal that read the Lease as deleted
	// would create it again, and the others would wait for it to expire.
	renewing sync.Mutex
}

type observed struct {
	renew metav1.MicroTime
	at    time.Time
}

// New returns a Membership; Start joins.
func New(opts Options) *Membership {
	opts.Prefix = cmp.Or(opts.Prefix, appName)
	opts.Duration = cmp.Or(opts.Duration, 15*time.Second)
	opts.RenewDeadline = cmp.Or(opts.RenewDeadline, 10*time.Second)
	opts.RetryPeriod = cmp.Or(opts.RetryPeriod, 2*time.Second)
	opts.LeaveTimeout = cmp.Or(opts.LeaveTimeout, time.Minute)
	if opts.OnChange == nil {
		opts.OnChange = func([]string) {}
	}
	return &Membership{opts: opts, seen: map[string]observed{}, left: make(chan struct{})}
}

// Name is this replica's identity.
func (m *Membership) Name() string { return m.opts.Name }

// Duration is how long a member stays live without renewing.
func (m *Membership) Duration() time.Duration { return m.opts.Duration }

// NeedLeaderElection puts the membership in the manager's group of the checkpoint keeper,
// which is stopped together: the membership must outlive the keeper's last save (it waits
// for Leave), and the manager waits for the other groups to end before it stops this one.
// Sharding runs without leader election, so the group starts on every replica.
func (m *Membership) NeedLeaderElection() bool { return true }

// MemberLeaseName is the name of a member's Lease.
func (m *Membership) MemberLeaseName(name string) string { return m.opts.Prefix + "-member-" + name }

// Members are the live members, sorted; this replica among them once it has joined.
func (m *Membership) Members() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.members)
}

// Start joins, then renews this replica's Lease and reads the members every RetryPeriod.
// After ctx ends it goes on renewing, so nobody takes over work still being handed over,
// until Leave (or LeaveTimeout). It returns an error when renewing failed for
// RenewDeadline: another replica may take the work over after Duration, so this one must
// stop serving before that.
func (m *Membership) Start(ctx context.Context) error {
	lastRenew := time.Now()
	tick := time.NewTicker(m.opts.RetryPeriod)
	defer tick.Stop()
	done := ctx.Done()
	var leaveTimeout <-chan time.Time
	for {
		if err := m.renew(context.WithoutCancel(ctx)); err != nil {
			if time.Since(lastRenew) > m.opts.RenewDeadline {
				return fmt.Errorf("member Lease %s not renewed for %s: %w", m.MemberLeaseName(m.opts.Name),
					m.opts.RenewDeadline, err)
			}
			m.opts.Log.V(1).Info("Renewing the member Lease failed; retrying", "error", err.Error())
		} else {
			lastRenew = time.Now()
			m.refresh(context.WithoutCancel(ctx))
		}
		select {
		case <-m.left:
			return nil
		case <-done:
			done = nil
			leaveTimeout = time.After(m.opts.LeaveTimeout)
		case <-leaveTimeout:
			m.opts.Log.Info("Handing work over took too long; leaving", "timeout", m.opts.LeaveTimeout)
			m.Leave(context.Background())
			return nil
		case <-tick.C:
		}
	}
}

// Leave deletes this replica's Lease, so the others see it gone at once, and ends Start.
// Call it once the work is handed over.
func (m *Membership) Leave(ctx context.Context) {
	m.leftOnce.Do(func() {
		m.renewing.Lock()
		defer m.renewing.Unlock()
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: m.opts.Namespace,
			Name: m.MemberLeaseName(m.opts.Name)}}
		if err := m.opts.Client.Delete(ctx, lease); err != nil && !apierrors.IsNotFound(err) {
			m.opts.Log.Info("Could not delete the member Lease; the others wait for it to expire", "error", err.Error())
		}
		close(m.left)
	})
}

func (m *Membership) renew(ctx context.Context) error {
	m.renewing.Lock()
	defer m.renewing.Unlock()
	select {
	case <-m.left:
		return nil // left: the Lease stays deleted
	default:
	}
	ctx, cancel := context.WithTimeout(ctx, m.opts.RenewDeadline)
	defer cancel()
	now := metav1.NowMicro()
	seconds := int32(m.opts.Duration.Round(time.Second) / time.Second)
	lease := &coordinationv1.Lease{}
	key := client.ObjectKey{Namespace: m.opts.Namespace, Name: m.MemberLeaseName(m.opts.Name)}
	err := m.opts.Client.Get(ctx, key, lease)
	if apierrors.IsNotFound(err) {
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name,
				Labels: map[string]string{labelName: appName, LabelComponent: componentMember}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &m.opts.Name, LeaseDurationSeconds: &seconds,
				AcquireTime: &now, RenewTime: &now},
		}
		return m.opts.Client.Create(ctx, lease)
	}
	if err != nil {
		return err
	}
	lease.Spec.HolderIdentity = &m.opts.Name
	lease.Spec.LeaseDurationSeconds = &seconds
	lease.Spec.RenewTime = &now
	return m.opts.Client.Update(ctx, lease)
}

// refresh reads the member Leases and tells OnChange when the live ones changed.
func (m *Membership) refresh(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, m.opts.RenewDeadline)
	defer cancel()
	var list coordinationv1.LeaseList
	if err := m.opts.Client.List(ctx, &list, client.InNamespace(m.opts.Namespace),
		client.MatchingLabels{labelName: appName, LabelComponent: componentMember}); err != nil {
		m.opts.Log.V(1).Info("Reading the members failed", "error", err.Error())
		return
	}
	now := time.Now()
	m.mu.Lock()
	seen := map[string]observed{}
	var live []string
	for _, l := range list.Items {
		if l.Spec.HolderIdentity == nil || l.Spec.RenewTime == nil {
			continue
		}
		name := *l.Spec.HolderIdentity
		o, known := m.seen[name]
		if !known || !o.renew.Equal(l.Spec.RenewTime) {
			o = observed{renew: *l.Spec.RenewTime, at: now}
			if !known {
				// First sight: trust its renewTime, so a replica starting next to a dead
				// one does not wait a whole duration to see it gone.
				o.at = l.Spec.RenewTime.Time
			}
		}
		seen[name] = o
		if now.Sub(o.at) < leaseDuration(&l, m.opts.Duration) || name == m.opts.Name {
			live = append(live, name)
		}
	}
	slices.Sort(live)
	live = slices.Compact(live)
	changed := !slices.Equal(live, m.members)
	m.seen, m.members, m.joined = seen, live, true
	m.mu.Unlock()
	if changed {
		m.opts.Log.Info("Members changed", "members", live)
		m.opts.OnChange(slices.Clone(live))
	}
}

func leaseDuration(l *coordinationv1.Lease, fallback time.Duration) time.Duration {
	if l.Spec.LeaseDurationSeconds != nil {
		return time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
	}
	return fallback
}

// gone tells whether the member name is certainly gone: its Lease deleted, or seen by this
// replica unrenewed for its whole duration. A Lease this replica has not watched expire
// (one created since the last read, say) is not gone: a claim is never taken from a
// member that may be starting to serve it.
func (m *Membership) gone(ctx context.Context, name string) bool {
	lease := &coordinationv1.Lease{}
	err := m.opts.Client.Get(ctx, client.ObjectKey{Namespace: m.opts.Namespace, Name: m.MemberLeaseName(name)}, lease)
	if apierrors.IsNotFound(err) {
		return true
	}
	if err != nil || lease.Spec.RenewTime == nil {
		return false
	}
	m.mu.Lock()
	o, ok := m.seen[name]
	m.mu.Unlock()
	if !ok || !o.renew.Equal(lease.Spec.RenewTime) {
		return false // renewed since we last looked, or never looked: alive
	}
	return time.Since(o.at) >= leaseDuration(lease, m.opts.Duration)
}

// ShardLeaseName is the name of the claim Lease of a shard key.
func (m *Membership) ShardLeaseName(key string) string {
	h := fnv.New64a()
	_, _ = h.Write([]byte(key))
	return fmt.Sprintf("%s-shard-%016x", m.opts.Prefix, h.Sum64())
}

// ErrHeld says the claim is held by a live member.
var ErrHeld = errors.New("held by a live member")

// Claim makes this replica the holder of key's claim. It succeeds when the claim is free,
// already ours, or held by a member that is not live (its Lease expired: it died). It
// returns the previous holder ("" when free), or ErrHeld with the holder.
func (m *Membership) Claim(ctx context.Context, key string) (previous string, err error) {
	lease := &coordinationv1.Lease{}
	name := client.ObjectKey{Namespace: m.opts.Namespace, Name: m.ShardLeaseName(key)}
	now := metav1.NowMicro()
	if err := m.opts.Client.Get(ctx, name, lease); apierrors.IsNotFound(err) {
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: name.Namespace, Name: name.Name,
				Labels:      map[string]string{labelName: appName, LabelComponent: componentShard},
				Annotations: map[string]string{AnnotationShard: key}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &m.opts.Name, AcquireTime: &now},
		}
		return "", m.opts.Client.Create(ctx, lease)
	} else if err != nil {
		return "", err
	}
	holder := ""
	if lease.Spec.HolderIdentity != nil {
		holder = *lease.Spec.HolderIdentity
	}
	switch {
	case holder == m.opts.Name:
		return holder, nil
	case holder != "" && !m.gone(ctx, holder):
		return holder, fmt.Errorf("shard %s: %w: %s", key, ErrHeld, holder)
	}
	// The update carries the resourceVersion read: of two replicas claiming at once, one
	// gets a conflict.
	lease.Spec.HolderIdentity = &m.opts.Name
	lease.Spec.AcquireTime = &now
	transitions := ptrValue(lease.Spec.LeaseTransitions) + 1
	lease.Spec.LeaseTransitions = &transitions
	return holder, m.opts.Client.Update(ctx, lease)
}

// Release frees key's claim if this replica holds it. Call it after the work of key is
// drained and checkpointed: a new holder starts from those checkpoints.
func (m *Membership) Release(ctx context.Context, key string) error {
	lease := &coordinationv1.Lease{}
	if err := m.opts.Client.Get(ctx, client.ObjectKey{Namespace: m.opts.Namespace, Name: m.ShardLeaseName(key)},
		lease); err != nil {
		return client.IgnoreNotFound(err)
	}
	if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != m.opts.Name {
		return nil
	}
	lease.Spec.HolderIdentity = nil
	return m.opts.Client.Update(ctx, lease)
}

// Holders reads every claim: shard key to holder ("" when free).
func (m *Membership) Holders(ctx context.Context) (map[string]string, error) {
	var list coordinationv1.LeaseList
	if err := m.opts.Client.List(ctx, &list, client.InNamespace(m.opts.Namespace),
		client.MatchingLabels{labelName: appName, LabelComponent: componentShard}); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(list.Items))
	for _, l := range list.Items {
		key, ok := l.Annotations[AnnotationShard]
		if !ok {
			continue
		}
		out[key] = ""
		if l.Spec.HolderIdentity != nil {
			out[key] = *l.Spec.HolderIdentity
		}
	}
	return out, nil
}

func ptrValue(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}

// Abandon ends Start without deleting the Lease, as a crash would: the others see this
// replica gone only when its Lease expires.
func (m *Membership) Abandon() { m.leftOnce.Do(func() { close(m.left) }) }
