package controller_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/testenv"
)

const crdName = "watchsubscriptions.notify.dynamicnotifier.io"

// loosenBackoffSchema replaces the schema of spec.delivery.retry.backoff by a bare string,
// as a CRD of an older release might have had it, and returns a function that puts the
// shipped schema back. Both wait until the API server validates by the new schema.
func loosenBackoffSchema(t *testing.T, probe *unstructured.Unstructured) (restore func()) {
	t.Helper()
	g := NewWithT(t)
	ctx := context.Background()
	crd := &apiextensionsv1.CustomResourceDefinition{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Name: crdName}, crd)).To(Succeed())
	shipped := crd.Spec.DeepCopy()
	retry := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties["delivery"].Properties["retry"]
	retry.Properties["backoff"] = apiextensionsv1.JSONSchemaProps{Type: "string"}
	crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties["delivery"].Properties["retry"] = retry
	g.Expect(k8s.Update(ctx, crd)).To(Succeed())
	g.Eventually(func() error { return k8s.Create(ctx, probe.DeepCopy(), client.DryRunAll) }).
		WithTimeout(20*time.Second).Should(Succeed(), "the looser schema takes effect")
	return func() {
		t.Helper()
		g.Eventually(func() error {
			current := &apiextensionsv1.CustomResourceDefinition{}
			if err := k8s.Get(ctx, client.ObjectKey{Name: crdName}, current); err != nil {
				return err
			}
			current.Spec = *shipped
			return k8s.Update(ctx, current)
		}).Should(Succeed())
		g.Eventually(func() error { return k8s.Create(ctx, probe.DeepCopy(), client.DryRunAll) }).
			WithTimeout(20*time.Second).ShouldNot(Succeed(), "the shipped schema is back")
	}
}

// TestSubscriptionStoredUnderALooserSchemaStopsOnlyItself: a duration Go cannot parse,
// stored before the schema refused it, used to fail the decoding of every subscription list,
// so the operator served nobody. Now that one subscription reports InvalidSpec and the
// others are served.
func TestSubscriptionStoredUnderALooserSchemaStopsOnlyItself(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	poison := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "notify.dynamicnotifier.io/v1alpha1", "kind": "WatchSubscription",
		"metadata": map[string]any{"namespace": ns, "name": "poison"},
		"spec": map[string]any{
			"resource": map[string]any{"version": "v1", "resource": "configmaps"},
			"sink":     map[string]any{"log": map[string]any{}},
			"delivery": map[string]any{"retry": map[string]any{"backoff": "9999999h"}},
		},
	}}
	g.Expect(k8s.Create(context.Background(), poison.DeepCopy(), client.DryRunAll)).NotTo(Succeed(),
		"the shipped schema refuses the duration")
	restore := loosenBackoffSchema(t, poison)
	create(t, poison)
	restore()

	startOperator(t)
	sk := newSink(t)
	good := subscription(ns, "good", sk.URL)
	create(t, good)
	waitReason(t, good, notifyv1.ReasonWatching, 20*time.Second)
	create(t, configMap(ns, "after", nil))
	g.Eventually(sk.summary).WithTimeout(10*time.Second).Should(ContainElement("added /api/v1/namespaces/"+ns+"/configmaps/after"),
		"the other subscription of the namespace is served")

	bad := &notifyv1.WatchSubscription{}
	bad.Namespace, bad.Name = ns, "poison"
	cond := waitReason(t, bad, notifyv1.ReasonInvalidSpec, 10*time.Second)
	g.Expect(cond.Message).To(ContainSubstring("spec.delivery.retry.backoff"))
	g.Expect(cond.Message).To(ContainSubstring("9999999h"))
}

// pacedSink answers after delay, serialised, so it takes about 1/delay requests a second,
// and records an event only when its request was answered (the sender saw it delivered).
type pacedSink struct {
	URL   string
	delay time.Duration

	mu     sync.Mutex
	serial sync.Mutex
	ids    map[string]int
	order  []string
	types  map[string]string
}

func newPacedSink(t *testing.T, delay time.Duration) *pacedSink {
	t.Helper()
	p := &pacedSink{delay: delay, ids: map[string]int{}, types: map[string]string{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.serial.Lock()
		time.Sleep(p.delay)
		p.serial.Unlock()
		if r.Context().Err() != nil {
			return // the sender gave up: not delivered
		}
		id, typ := r.Header.Get("Ce-Id"), r.Header.Get("Ce-Type")
		w.WriteHeader(http.StatusAccepted)
		p.mu.Lock()
		p.ids[id]++
		p.types[id] = typ
		p.order = append(p.order, id)
		p.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

func (p *pacedSink) received() (distinct, total int, dups []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, n := range p.ids {
		total += n
		if n > 1 {
			dups = append(dups, fmt.Sprintf("%s x%d", id, n))
		}
	}
	return len(p.ids), total, dups
}

func (p *pacedSink) has(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ids[id] > 0
}

// listRequests reads how many LIST requests for ConfigMaps the API server has served.
func listRequests(g Gomega) float64 {
	cs := kubernetes.NewForConfigOrDie(cfg)
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	g.Expect(err).NotTo(HaveOccurred())
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "apiserver_request_total{") && strings.Contains(line, `resource="configmaps"`) &&
			strings.Contains(line, `verb="LIST"`) {
			var v float64
			_, _ = fmt.Sscan(line[strings.LastIndex(line, " ")+1:], &v)
			sum += v
		}
	}
	return sum
}

// TestInitialEventsOfALargeCollectionWithASlowSink: 5,000 objects, a sink taking about 200
// requests a second and a queue of 100. Listing used to wait for the sink between pages,
// holding the list's continue token for the whole delivery; a compaction meanwhile expired
// it and the list started over from page one, sending objects again. Now every object
// arrives once and the LIST requests stay few: the informer's list and the subscriber's.
func TestInitialEventsOfALargeCollectionWithASlowSink(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	const objects = 5000
	uids := createConfigMaps(t, ns, objects)

	startOperator(t)
	sk := newPacedSink(t, 5*time.Millisecond)
	listsBefore := listRequests(g)
	ws := subscription(ns, "initial", sk.URL)
	ws.Spec.SendInitialEvents = true
	ws.Spec.Delivery = &notifyv1.DeliverySpec{MaxQueueSize: new(int32(100))}
	create(t, ws)
	g.Eventually(func() int { d, _, _ := sk.received(); return d }).WithTimeout(30*time.Second).
		Should(BeNumerically(">=", 500), "initial events flow")
	// The compaction the API server's etcd runs every few minutes, while the list is (or
	// was, before the fix) still being paged through.
	g.Expect(testenv.CompactEtcd(env)).To(Succeed())
	g.Eventually(func() int { d, _, _ := sk.received(); return d }).WithTimeout(90*time.Second).
		Should(Equal(objects), "every object's Added arrives")

	// Barrier: a later change arrives, so any repeat of the initial list would have too.
	barrier := configMap(ns, "barrier", nil)
	create(t, barrier)
	g.Eventually(func() bool { return sk.has(string(barrier.UID) + ":" + barrier.ResourceVersion + ":Added") }).
		WithTimeout(30 * time.Second).Should(BeTrue())
	distinct, total, dups := sk.received()
	g.Expect(dups).To(BeEmpty(), "objects sent more than once")
	g.Expect(total).To(Equal(objects + 1))
	g.Expect(distinct).To(Equal(objects + 1))
	for uid := range uids {
		g.Expect(sk.hasUID(uid)).To(BeTrue(), "object %s", uid)
	}
	lists := listRequests(g) - listsBefore
	t.Logf("LIST requests for ConfigMaps while the subscription started: %.0f", lists)
	// The informer's own list is paged too (it streams into the view): two lists in all.
	g.Expect(lists).To(BeNumerically("<=", 2*objects/500+3),
		"the informer's list and the initial list of the collection (500 per page), neither repeated")
}

func (p *pacedSink) hasUID(uid string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id := range p.ids {
		if strings.HasPrefix(id, uid+":") {
			return true
		}
	}
	return false
}

// createConfigMaps creates n ConfigMaps in ns with a few writers and returns their uids.
func createConfigMaps(t *testing.T, ns string, n int) map[string]bool {
	t.Helper()
	const writers = 8
	var mu sync.Mutex
	uids := map[string]bool{}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := w; i < n; i += writers {
				cm := configMap(ns, fmt.Sprintf("cm-%05d", i), nil)
				if err := k8s.Create(context.Background(), cm); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				uids[string(cm.UID)] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return uids
}

// TestOldObjectForASubscriberJoiningARunningWatch: a subscriber that needs the object before
// an update joins a watch that kept none. Its first update of an object that existed before
// it joined used to come with oldObject null, so a filter on oldObject missed it.
func TestOldObjectForASubscriberJoiningARunningWatch(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	startOperator(t)
	lean := newSink(t)
	first := subscription(ns, "lean", lean.URL)
	create(t, first)
	waitReason(t, first, notifyv1.ReasonWatching, 10*time.Second)
	cm := configMap(ns, "settings", nil)
	create(t, cm)
	g.Eventually(lean.summary).WithTimeout(10 * time.Second).Should(HaveLen(1))

	needsOld := newSink(t)
	joiner := subscription(ns, "joiner", needsOld.URL)
	joiner.Spec.Filter = `eventType == "Updated" && object.data.k != oldObject.data.k`
	joiner.Spec.Payload = &notifyv1.PayloadSpec{IncludeOldObject: true, IncludeChangedPaths: true}
	create(t, joiner)
	waitReason(t, joiner, notifyv1.ReasonWatching, 10*time.Second)

	cm.Data["k"] = "changed"
	g.Expect(k8s.Update(context.Background(), cm)).To(Succeed())
	g.Eventually(needsOld.Events).WithTimeout(10*time.Second).Should(HaveLen(1),
		"the filter on oldObject matches the first update after joining")
	var data struct {
		Object       corev1.ConfigMap `json:"object"`
		OldObject    corev1.ConfigMap `json:"oldObject"`
		ChangedPaths []string         `json:"changedPaths"`
	}
	g.Expect(json.Unmarshal([]byte(needsOld.Events()[0].Data), &data)).To(Succeed())
	g.Expect(data.OldObject.Data).To(HaveKeyWithValue("k", "v"))
	g.Expect(data.Object.Data).To(HaveKeyWithValue("k", "changed"))
	g.Expect(data.ChangedPaths).To(ConsistOf("data.k"))
}

// TestSpecChangeHandsOverWithoutDuplicates: while one object changes fast and a slow sink
// has a queue, the subscription's spec changes several times. Every change is delivered
// exactly once, in order.
func TestSpecChangeHandsOverWithoutDuplicates(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	ns := newNamespace(t)
	startOperator(t)
	sk := newPacedSink(t, 10*time.Millisecond)
	ws := subscription(ns, "changing", sk.URL)
	ws.Spec.Namespaces = []notifyv1.NamespaceName{notifyv1.NamespaceName(ns)}
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)

	cm := configMap(ns, "hot", nil)
	create(t, cm)
	want := []string{string(cm.UID) + ":" + cm.ResourceVersion + ":Added"}
	done := make(chan error, 1)
	go func() {
		for i := range 150 {
			cm.Data["n"] = fmt.Sprint(i)
			if err := k8s.Update(ctx, cm); err != nil {
				done <- err
				return
			}
			want = append(want, string(cm.UID)+":"+cm.ResourceVersion+":Updated")
		}
		done <- nil
	}()
	for i := range 8 {
		time.Sleep(100 * time.Millisecond) // spread the spec changes over the stream
		g.Eventually(func() error {
			current := &notifyv1.WatchSubscription{}
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(ws), current); err != nil {
				return err
			}
			current.Spec.Delivery = &notifyv1.DeliverySpec{Timeout: notifyv1.DurationOf(time.Duration(5+i) * time.Second)}
			return k8s.Update(ctx, current)
		}).Should(Succeed())
	}
	g.Expect(<-done).To(Succeed())
	last := want[len(want)-1]
	g.Eventually(func() bool { return sk.has(last) }).WithTimeout(60 * time.Second).Should(BeTrue())
	_, _, dups := sk.received()
	g.Expect(dups).To(BeEmpty(), "changes delivered more than once across the spec changes")
	sk.mu.Lock()
	defer sk.mu.Unlock()
	g.Expect(sk.order).To(Equal(want), "every change once, in order")
}

// TestHugeSinkErrorsStillLetStatusBeWritten: a sink whose error is 40 KB long used to make
// every status patch fail (the condition message is bounded by the API), so status froze.
func TestHugeSinkErrorsStillLetStatusBeWritten(t *testing.T) {
	g := NewWithT(t)
	ns := newNamespace(t)
	startOperator(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(func() { _ = ln.Close() })
	reason := strings.Repeat("x", 40<<10)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = conn.Close() }()
				r := bufio.NewReader(conn)
				req, err := http.ReadRequest(r)
				if err != nil {
					return
				}
				_ = req.Body.Close()
				_, _ = fmt.Fprintf(conn, "HTTP/1.1 500 %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", reason)
			}()
		}
	}()
	ws := subscription(ns, "huge-error", "http://"+ln.Addr().String()+"/events")
	ws.Spec.Delivery = &notifyv1.DeliverySpec{Retry: &notifyv1.RetryPolicy{MaxAttempts: new(int32(1))}}
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching, 10*time.Second)
	create(t, configMap(ns, "trigger", nil))
	cond := waitReason(t, ws, notifyv1.ReasonDeliveryFailing, 20*time.Second)
	g.Expect(len(cond.Message)).To(BeNumerically("<=", 1024), "the message is bounded")
	g.Expect(cond.Message).To(HaveSuffix("…"))
	g.Expect(cond.Message).To(ContainSubstring("500 xxx"))
	got := &notifyv1.WatchSubscription{}
	g.Eventually(func() int64 {
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(ws), got)).To(Succeed())
		return got.Status.EventsFailed
	}).WithTimeout(10*time.Second).Should(Equal(int64(1)), "the counters are written too")
}
