package controller

import (
	"strings"
	"testing"

	notifyv1 "github.com/dynamic-notifier/dynamic-notifier/api/v1alpha1"
	"github.com/dynamic-notifier/dynamic-notifier/internal/delivery"
)

// TestDeliveryFailingMessageMasksURLCredentials: whatever error text delivery reports, the
// DeliveryFailing condition (and the Event made from it) shows URLs without credentials.
func TestDeliveryFailingMessageMasksURLCredentials(t *testing.T) {
	const lastError = `encoding /api/v1/x: Post "https://user:pa55@sink.example/in?token=t0k3n&v=1": EOF`
	c := readyCondition(readiness{Resource: "v1/secrets", Scopes: []scopeState{{Synced: true}},
		Delivery: countersSnapshot{Snapshot: delivery.Snapshot{Failing: true, LastError: lastError}}})
	if c.Reason != notifyv1.ReasonDeliveryFailing {
		t.Fatalf("reason %s, want %s", c.Reason, notifyv1.ReasonDeliveryFailing)
	}
	if strings.Contains(c.Message, "pa55") || strings.Contains(c.Message, "t0k3n") {
		t.Fatalf("credentials in the condition message %q", c.Message)
	}
	if want := `"https://user:***@sink.example/in?token=***&v=1": EOF`; !strings.Contains(c.Message, want) {
		t.Fatalf("message %q does not contain %q", c.Message, want)
	}
}
