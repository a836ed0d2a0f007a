package membership_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/dynamic-notifier/dynamic-notifier/internal/membership"
	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
)

var k8s client.Client

func TestMain(m *testing.M) {
	// Lease writes and watches lag on a loaded machine; gomega's 1s default is for unit tests.
	SetDefaultEventuallyTimeout(10 * time.Second)
	testenv.Main(m, func(_ *envtest.Environment, cfg *rest.Config) error {
		var err error
		k8s, err = client.New(cfg, client.Options{})
		return err
	})
}

func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "membership-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// member runs a Membership until the returned stop is called; stop(true) leaves (deletes
// the Lease), stop(false) ends renewing without leaving, as a killed process would.
type member struct {
	*membership.Membership
	cancel context.CancelFunc
	done   chan error
	mu     sync.Mutex
	views  [][]string
}

func join(t *testing.T, ns, name string) *member {
	t.Helper()
	return joinFor(t, ns, name, 3*time.Second)
}

// joinFor joins with a Lease of the given duration (renewed within two thirds of it).
func joinFor(t *testing.T, ns, name string, duration time.Duration) *member {
	t.Helper()
	m := &member{done: make(chan error, 1)}
	m.Membership = membership.New(membership.Options{Client: k8s, Namespace: ns, Name: name,
		Duration: duration, RenewDeadline: duration * 2 / 3, RetryPeriod: 200 * time.Millisecond,
		LeaveTimeout: 10 * time.Second,
		OnChange: func(members []string) {
			m.mu.Lock()
			m.views = append(m.views, members)
			m.mu.Unlock()
		}})
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() { m.done <- m.Start(ctx) }()
	t.Cleanup(func() { m.stop(true) })
	return m
}

var stopped sync.Map

func (m *member) stop(leave bool) {
	if _, already := stopped.LoadOrStore(m, true); already {
		return
	}
	m.cancel()
	if leave {
		m.Leave(context.Background())
	}
}

func TestMembersSeeEachOtherAndLeavingIsSeenAtOnce(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	// Leases of a minute: seeing c gone within 20s proves its Lease was deleted, not that
	// it expired, however slow the machine.
	a, b, c := joinFor(t, ns, "a", time.Minute), joinFor(t, ns, "b", time.Minute), joinFor(t, ns, "c", time.Minute)
	for _, m := range []*member{a, b, c} {
		g.Eventually(m.Members).Should(Equal([]string{"a", "b", "c"}), "%s sees all three", m.Name())
	}
	var leases coordinationv1.LeaseList
	g.Expect(k8s.List(context.Background(), &leases, client.InNamespace(ns),
		client.MatchingLabels{membership.LabelComponent: "member"})).To(Succeed())
	g.Expect(leases.Items).To(HaveLen(3), "one Lease per member, as kubectl get leases shows")

	c.stop(true)
	g.Eventually(c.done).Should(Receive(BeNil()), "leaving ends Start")
	g.Eventually(a.Members, 20*time.Second, 100*time.Millisecond).Should(Equal([]string{"a", "b"}),
		"a sees c gone long before its Lease could expire")
	g.Eventually(b.Members, 20*time.Second, 100*time.Millisecond).Should(Equal([]string{"a", "b"}),
		"b sees c gone long before its Lease could expire")
}

// Start keeps renewing until Leave: a renewal that reads the Lease after Leave deleted it
// must not create it again, or the others see the member live until the Lease expires.
func TestARenewalAfterLeavingDoesNotBringTheLeaseBack(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	a := joinFor(t, ns, "a", time.Minute)
	g.Eventually(a.Members).Should(Equal([]string{"a"}))
	a.stop(true)
	g.Eventually(a.done).Should(Receive(BeNil()), "leaving ends Start")

	g.Expect(a.Renew(context.Background())).To(Succeed())
	var leases coordinationv1.LeaseList
	g.Expect(k8s.List(context.Background(), &leases, client.InNamespace(ns),
		client.MatchingLabels{membership.LabelComponent: "member"})).To(Succeed())
	g.Expect(leases.Items).To(BeEmpty(), "the member Lease after Leave and a late renewal")
}

func TestAMemberThatStopsRenewingExpires(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	a, b := join(t, ns, "a"), join(t, ns, "b")
	g.Eventually(a.Members).Should(Equal([]string{"a", "b"}))
	b.stop(false) // its context ends: it keeps renewing until it leaves or LeaveTimeout
	g.Consistently(a.Members, time.Second, 100*time.Millisecond).Should(Equal([]string{"a", "b"}),
		"a member handing its work over is still live")

	// A killed member: its Lease stays, not renewed.
	d := join(t, ns, "d")
	g.Eventually(a.Members).Should(ContainElement("d"))
	killed := time.Now()
	d.kill()
	g.Eventually(a.Members, 10*time.Second, 100*time.Millisecond).ShouldNot(ContainElement("d"))
	g.Expect(time.Since(killed)).To(BeNumerically(">=", 2*time.Second), "not before its Lease could expire")
}

// kill ends renewing without leaving, as SIGKILL would; the Lease stays.
func (m *member) kill() {
	stopped.Store(m, true)
	m.cancel()
	// Start renews until Leave; a killed process does not. Ending it through the leave
	// channel would delete the Lease, so the member is abandoned instead: its Lease is
	// deleted by hand after the renewals stop.
	m.Abandon()
}

func TestClaimsAreExclusiveAndFollowLiveness(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	a, b := join(t, ns, "a"), join(t, ns, "b")
	for _, m := range []*member{a, b} {
		g.Eventually(m.Members).Should(Equal([]string{"a", "b"}))
	}
	const key = "configmaps./v1"
	prev, err := a.Claim(ctx, key)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(prev).To(BeEmpty(), "a free claim")
	_, err = b.Claim(ctx, key)
	g.Expect(errors.Is(err, membership.ErrHeld)).To(BeTrue(), "a live holder keeps its claim: %v", err)
	holders, err := a.Holders(ctx)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(holders).To(Equal(map[string]string{key: "a"}))

	g.Expect(a.Release(ctx, key)).To(Succeed())
	prev, err = b.Claim(ctx, key)
	g.Expect(err).NotTo(HaveOccurred(), "a released claim is free")
	g.Expect(prev).To(BeEmpty())
	g.Expect(a.Release(ctx, key)).To(Succeed(), "releasing what another holds changes nothing")
	g.Expect(a.Holders(ctx)).To(Equal(map[string]string{key: "b"}))

	b.kill()
	_, err = a.Claim(ctx, key)
	g.Expect(errors.Is(err, membership.ErrHeld)).To(BeTrue(), "not while b's Lease has not expired")
	g.Eventually(a.Members, 10*time.Second, 100*time.Millisecond).Should(Equal([]string{"a"}))
	prev, err = a.Claim(ctx, key)
	g.Expect(err).NotTo(HaveOccurred(), "the claim of a member whose Lease expired is taken over")
	g.Expect(prev).To(Equal("b"))
}

func TestConcurrentClaimsHaveOneWinner(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	names := []string{"a", "b", "c", "d"}
	ms := make([]*member, 0, len(names))
	for _, n := range names {
		ms = append(ms, join(t, ns, n))
	}
	for _, m := range ms {
		g.Eventually(m.Members).Should(Equal(names))
	}
	for _, key := range []string{"one", "two", "three"} {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var winners []string
		for _, m := range ms {
			wg.Go(func() {
				if _, err := m.Claim(context.Background(), key); err == nil {
					mu.Lock()
					winners = append(winners, m.Name())
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		g.Expect(winners).To(HaveLen(1), "%s: exactly one claim wins, got %v", key, winners)
		holders, err := ms[0].Holders(context.Background())
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(slices.Contains(winners, holders[key])).To(BeTrue())
	}
}
