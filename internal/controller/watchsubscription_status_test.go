package controller

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/delivery"
	"github.com/dynamic-notifier/dynamic-notifier/internal/resolve"
	"github.com/dynamic-notifier/dynamic-notifier/internal/subscription"
)

func TestReadyCondition(t *testing.T) {
	gvr := schema.GroupVersionResource{Group: "example.com", Version: "v1", Resource: "widgets"}
	gr := schema.GroupResource{Group: "example.com", Resource: "widgets"}
	synced := []scopeState{{Namespace: "team-a", Synced: true}}
	cases := []struct {
		name    string
		in      readiness
		status  metav1.ConditionStatus
		reason  string
		message string
	}{
		{"watching", readiness{Resource: "example.com/v1/widgets", Scopes: synced},
			metav1.ConditionTrue, notifyv1.ReasonWatching, "Watching example.com/v1/widgets in namespace team-a"},
		{"cluster-wide", readiness{Resource: "v1/namespaces", Scopes: []scopeState{{Synced: true}}},
			metav1.ConditionTrue, notifyv1.ReasonWatching, "cluster-wide"},
		{"syncing", readiness{Resource: "x", Scopes: []scopeState{{Namespace: "a", Synced: true}, {Namespace: "b"}}},
			metav1.ConditionUnknown, notifyv1.ReasonStarting, "in namespace b"},
		{"suspended wins over everything", readiness{Suspended: true, SpecErr: errors.New("bad"), Scopes: synced},
			metav1.ConditionFalse, notifyv1.ReasonSuspended, "spec.suspend"},
		{"invalid spec", readiness{SpecErr: errors.New("spec.selector: bad key")},
			metav1.ConditionFalse, notifyv1.ReasonInvalidSpec, "spec.selector: bad key"},
		{"unknown resource", readiness{Resource: "example.com/v1/widgets", ResolveErr: &meta.NoResourceMatchError{PartialResource: gvr}},
			metav1.ConditionFalse, notifyv1.ReasonResourceNotFound, "example.com/v1/widgets is not served"},
		{"not watchable", readiness{ResolveErr: &resolve.NotWatchableError{GVR: schema.GroupVersionResource{Version: "v1", Resource: "pods/log"}, Verbs: []string{"get"}}},
			metav1.ConditionFalse, notifyv1.ReasonNotWatchable, "Subresource v1/pods/log cannot be watched"},
		{"forbidden list", readiness{Resource: "example.com/v1/widgets", Scopes: []scopeState{{Namespace: "team-a", Err: apierrors.NewForbidden(gr, "", errors.New("no RBAC"))}}},
			metav1.ConditionFalse, notifyv1.ReasonForbidden, "may not list and watch example.com/v1/widgets in namespace team-a"},
		{"gone under a running watch", readiness{Resource: "example.com/v1/widgets", Scopes: []scopeState{{Synced: true, Err: apierrors.NewNotFound(gr, "")}}},
			metav1.ConditionFalse, notifyv1.ReasonResourceNotFound, "no longer served"},
		{"other watch error", readiness{Resource: "x", Scopes: []scopeState{{Err: errors.New("connection refused")}}},
			metav1.ConditionFalse, notifyv1.ReasonWatchFailing, "connection refused"},
		{"watch error wins over syncing", readiness{Resource: "x", Scopes: []scopeState{{Namespace: "a"}, {Namespace: "b", Err: errors.New("boom")}}},
			metav1.ConditionFalse, notifyv1.ReasonWatchFailing, "in namespace b"},
		{"delivery failing", readiness{Resource: "x", Scopes: synced, Delivery: countersSnapshot{Snapshot: delivery.Snapshot{Failing: true, LastError: "POST http://h/x: 503 Service Unavailable"}}},
			metav1.ConditionFalse, notifyv1.ReasonDeliveryFailing, "POST http://h/x: 503 Service Unavailable"},
		{"a check without an answer, nothing running", readiness{Resource: "x", CheckErr: errors.New("authorization: connection refused")},
			metav1.ConditionUnknown, notifyv1.ReasonCheckFailing, "Could not check authorization: connection refused, retrying"},
		{"a check without an answer, running on the last one", readiness{Resource: "x", Scopes: synced, CheckErr: errors.New("authorization: timeout")},
			metav1.ConditionTrue, notifyv1.ReasonWatching, "could not re-check authorization: timeout; running on the last answer"},
		{"a sink Secret the ServiceAccount may not get", readiness{Resource: "x", SinkErr: &subscription.SinkError{Msg: "spec.sink.headersFrom.secretRef: denied", Denied: true}},
			metav1.ConditionFalse, notifyv1.ReasonForbidden, "spec.sink.headersFrom.secretRef"},
		{"filter over budget", readiness{Resource: "x", Scopes: synced, OverBudgetRecently: true, Delivery: countersSnapshot{FilterOverBudget: 3}},
			metav1.ConditionFalse, notifyv1.ReasonFilterOverBudget, "for 3 changes"},
		{"evicted for the memory budget", readiness{Resource: "x", Scopes: synced, DroppedRecently: true,
			Delivery: countersSnapshot{Snapshot: delivery.Snapshot{Dropped: 5, Evicted: 4}}},
			metav1.ConditionFalse, notifyv1.ReasonEventsDropped, "5 events dropped so far, 4 of them (oldest first)"},
		{"syncing hides delivery state", readiness{Resource: "x", Scopes: []scopeState{{}}, Delivery: countersSnapshot{Snapshot: delivery.Snapshot{Failing: true}}},
			metav1.ConditionUnknown, notifyv1.ReasonStarting, "Listing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := readyCondition(tc.in)
			if c.Type != notifyv1.ConditionReady || c.Status != tc.status || c.Reason != tc.reason {
				t.Fatalf("got %s/%s/%s, want Ready/%s/%s", c.Type, c.Status, c.Reason, tc.status, tc.reason)
			}
			if !strings.Contains(c.Message, tc.message) {
				t.Errorf("message %q does not contain %q", c.Message, tc.message)
			}
		})
	}
}

func TestKeepWatchingDuringRestartGrace(t *testing.T) {
	watching := &metav1.Condition{Reason: notifyv1.ReasonWatching, ObservedGeneration: 3}
	starting := metav1.Condition{Reason: notifyv1.ReasonStarting}
	cases := []struct {
		name       string
		old        *metav1.Condition
		updated    metav1.Condition
		generation int64
		syncingFor time.Duration
		keep       bool
	}{
		{"restart keeps Watching", watching, starting, 3, time.Second, true},
		{"grace runs out", watching, starting, 3, restartGrace, false},
		{"spec changed", watching, starting, 4, time.Second, false},
		{"was not watching", &metav1.Condition{Reason: notifyv1.ReasonResourceNotFound, ObservedGeneration: 3}, starting, 3, 0, false},
		{"new subscription", nil, starting, 1, 0, false},
		{"errors are never hidden", watching, metav1.Condition{Reason: notifyv1.ReasonForbidden}, 3, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			keep, recheck := keepWatching(tc.old, tc.updated, tc.generation, tc.syncingFor)
			if keep != tc.keep {
				t.Fatalf("keep = %v, want %v", keep, tc.keep)
			}
			if keep && (recheck <= 0 || recheck > restartGrace) {
				t.Errorf("recheck = %v, want within (0, %v]", recheck, restartGrace)
			}
		})
	}
}

func TestCRDName(t *testing.T) {
	for gvr, want := range map[schema.GroupVersionResource]string{
		{Group: "example.com", Version: "v1", Resource: "widgets"}:        "widgets.example.com",
		{Group: "example.com", Version: "v1", Resource: "widgets/status"}: "widgets.example.com",
	} {
		if got := crdName(gvr); got != want {
			t.Errorf("crdName(%v) = %q, want %q", gvr, got, want)
		}
	}
}

func TestAPIServerUnavailable(t *testing.T) {
	gr := schema.GroupResource{Group: "notify.dynamicnotifier.io", Resource: "watchsubscriptions"}
	refused := &url.Error{Op: "Patch", URL: "https://127.0.0.1:6443/x", Err: &net.OpError{Op: "dial", Net: "tcp",
		Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", refused, true},
		{"service unavailable", apierrors.NewServiceUnavailable("starting"), true},
		{"too many requests", apierrors.NewTooManyRequests("slow down", 1), true},
		{"timeout", apierrors.NewTimeoutError("slow", 1), true},
		{"deadline", fmt.Errorf("patch: %w", context.DeadlineExceeded), true},
		{"conflict", apierrors.NewConflict(gr, "x", errors.New("changed")), false},
		{"invalid", apierrors.NewBadRequest("no"), false},
		{"forbidden", apierrors.NewForbidden(gr, "x", errors.New("no")), false},
	}
	for _, c := range cases {
		if got := apiServerUnavailable(c.err); got != c.want {
			t.Errorf("%s: apiServerUnavailable(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}

func TestReadyEvent(t *testing.T) {
	c := func(status metav1.ConditionStatus, reason string) *metav1.Condition {
		return &metav1.Condition{Type: notifyv1.ConditionReady, Status: status, Reason: reason}
	}
	starting := c(metav1.ConditionUnknown, notifyv1.ReasonStarting)
	watching := c(metav1.ConditionTrue, notifyv1.ReasonWatching)
	failing := c(metav1.ConditionFalse, notifyv1.ReasonDeliveryFailing)
	dropped := c(metav1.ConditionFalse, notifyv1.ReasonEventsDropped)
	cases := []struct {
		name     string
		old, new *metav1.Condition
		want     string // "" for no Event
	}{
		{"first status: starting", nil, starting, ""},
		{"first status: ready at once", nil, watching, ""},
		{"started", starting, watching, ""},
		{"first status: failing", nil, failing, "Warning"},
		{"starts failing", watching, failing, "Warning"},
		{"fails for another reason", failing, dropped, "Warning"},
		{"still failing", failing, failing, ""},
		{"recovers", failing, watching, "Normal"},
		{"still watching", watching, watching, ""},
	}
	for _, tc := range cases {
		got, ok := readyEvent(tc.old, *tc.new)
		if (tc.want != "") != ok || got != tc.want {
			t.Errorf("%s: readyEvent = %q, %v; want %q", tc.name, got, ok, tc.want)
		}
	}
}

func TestBoundMessage(t *testing.T) {
	short := strings.Repeat("a", maxMessage)
	if got := boundMessage(short); got != short {
		t.Errorf("a message at the limit is kept whole")
	}
	long := strings.Repeat("é", maxMessage) // two bytes each
	got := boundMessage(long)
	if len(got) > maxMessage || !strings.HasSuffix(got, "…") || !utf8.ValidString(got) {
		t.Errorf("boundMessage(%d bytes) = %d bytes, suffix %q, valid UTF-8 %v", len(long), len(got),
			got[len(got)-3:], utf8.ValidString(got))
	}
}

func TestSinkReadyCondition(t *testing.T) {
	unreachable := &subscription.SinkError{Msg: "spec.webhook.urlFrom: reading Secret hook: connection refused",
		Cause: errors.New("dial tcp 127.0.0.1:6443: connection refused")}
	overloaded := &subscription.SinkError{Msg: "spec.webhook.urlFrom: reading Secret hook: too many requests",
		Cause: apierrors.NewTooManyRequests("slow down", 1)}
	missing := &subscription.SinkError{Msg: "spec.webhook.urlFrom: Secret hook not found in namespace shop",
		Cause: apierrors.NewNotFound(corev1.Resource("secrets"), "hook")}
	noKey := &subscription.SinkError{Msg: "spec.webhook.urlFrom: Secret hook has no key url"}
	cases := []struct {
		name       string
		err        error
		wantStatus metav1.ConditionStatus
		wantReason string
	}{
		{"complete", nil, metav1.ConditionTrue, notifyv1.SinkReasonValid},
		{"API server unreachable", unreachable, metav1.ConditionUnknown, notifyv1.ReasonCheckFailing},
		{"API server overloaded", overloaded, metav1.ConditionUnknown, notifyv1.ReasonCheckFailing},
		{"Secret missing", missing, metav1.ConditionFalse, notifyv1.ReasonInvalidSink},
		{"key missing", noKey, metav1.ConditionFalse, notifyv1.ReasonInvalidSink},
	}
	for _, tc := range cases {
		c := sinkReadyCondition(tc.err)
		if c.Type != notifyv1.ConditionReady || c.Status != tc.wantStatus || c.Reason != tc.wantReason ||
			(tc.err != nil && !strings.Contains(c.Message, tc.err.Error())) {
			t.Errorf("%s: got %s/%s %q, want %s/%s with the error", tc.name, c.Status, c.Reason, c.Message, tc.wantStatus, tc.wantReason)
		}
	}
}

func TestDeliveringCondition(t *testing.T) {
	user := func(name, reason, msg string) notifyv1.WatchSubscription {
		ws := notifyv1.WatchSubscription{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: name}}
		ws.Status.Conditions = []metav1.Condition{{Type: notifyv1.ConditionReady, Reason: reason, Message: msg}}
		return ws
	}
	cases := []struct {
		name       string
		users      []notifyv1.WatchSubscription
		wantStatus metav1.ConditionStatus
		wantReason string
		wantIn     string
	}{
		{"unused", nil, metav1.ConditionUnknown, notifyv1.SinkReasonUnused, "No subscription"},
		{"all deliver", []notifyv1.WatchSubscription{user("a", notifyv1.ReasonWatching, ""), user("b", notifyv1.ReasonStarting, "")},
			metav1.ConditionTrue, notifyv1.SinkReasonDelivering, "2 subscriptions"},
		{"one fails", []notifyv1.WatchSubscription{user("a", notifyv1.ReasonWatching, ""),
			user("b", notifyv1.ReasonDeliveryFailing, "POST https://hooks.example/x: 503 Service Unavailable")},
			metav1.ConditionFalse, notifyv1.SinkReasonFailing, "1 of 2 subscriptions using the sink fail to deliver: team-a/b (POST"},
		{"one user", []notifyv1.WatchSubscription{user("a", notifyv1.ReasonWatching, "")},
			metav1.ConditionTrue, notifyv1.SinkReasonDelivering, "1 subscription uses the sink"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := deliveringCondition(tc.users)
			if c.Status != tc.wantStatus || c.Reason != tc.wantReason || !strings.Contains(c.Message, tc.wantIn) {
				t.Errorf("got %s/%s %q, want %s/%s containing %q", c.Status, c.Reason, c.Message, tc.wantStatus,
					tc.wantReason, tc.wantIn)
			}
		})
	}
}
