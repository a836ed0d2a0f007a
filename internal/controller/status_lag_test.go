package controller_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
)

// A status write does not come back as a reconcile, and the operator's informer may see it
// late (a busy API server, a slow network). The status must still end up true: a queue that
// filled and drained while the informer lagged shows as drained, not as the depth it had.
func TestStatusEndsTrueWhileTheOperatorsCacheLags(t *testing.T) {
	rc := rest.CopyConfig(cfg)
	rc.Wrap(func(next http.RoundTripper) http.RoundTripper {
		return lagWatches{next: next, resource: "watchsubscriptions", lag: 2 * time.Second}
	})
	g := NewWithT(t)
	startOperatorWith(t, rc, testOptions())
	ns := newNamespace(t)
	s := newSink(t)
	release := make(chan struct{})
	s.mu.Lock()
	s.block = release
	s.mu.Unlock()
	ws := subscription(ns, "lag", s.URL)
	create(t, ws)
	waitReason(t, ws, notifyv1.ReasonWatching, 30*time.Second)

	for i := range 3 {
		create(t, configMap(ns, fmt.Sprintf("cm-%d", i), nil))
	}
	status := func(g Gomega) notifyv1.WatchSubscriptionStatus {
		got := &notifyv1.WatchSubscription{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(ws), got)).To(Succeed())
		return got.Status
	}
	g.Eventually(func(g Gomega) {
		g.Expect(status(g).EventsQueued).To(BeNumerically(">", 0), "status.eventsQueued while the sink holds the events")
	}).WithTimeout(15 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())

	close(release)
	g.Eventually(func(g Gomega) {
		st := status(g)
		g.Expect(st.EventsDelivered).To(BeEquivalentTo(3), "status.eventsDelivered")
		g.Expect(st.EventsQueued).To(BeZero(), "status.eventsQueued after every event was delivered")
	}).WithTimeout(15 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
}

// lagWatches delays what the watches of one resource read, as a slow connection would.
type lagWatches struct {
	next     http.RoundTripper
	resource string
	lag      time.Duration
}

func (l lagWatches) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := l.next.RoundTrip(req)
	if err != nil || req.URL.Query().Get("watch") != "true" || !strings.HasSuffix(req.URL.Path, "/"+l.resource) {
		return resp, err
	}
	resp.Body = lagReader{ReadCloser: resp.Body, lag: l.lag}
	return resp, nil
}

type lagReader struct {
	io.ReadCloser
	lag time.Duration
}

func (r lagReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if n > 0 {
		time.Sleep(r.lag)
	}
	return n, err
}
