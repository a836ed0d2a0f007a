package operator

import (
	"net/netip"
	"testing"
)

// The zero Options give the safe sink defaults; the switches reach the sink clients.
func TestSinkClientOptions(t *testing.T) {
	safe := sinkClientOptions(Options{})
	if safe.Deny != nil || safe.Proxy != nil || safe.FollowRedirects {
		t.Errorf("zero Options give %+v, want the default deny list, no proxy, no redirects", safe)
	}
	if !sinkClientOptions(Options{SinkFollowRedirects: true}).FollowRedirects {
		t.Errorf("SinkFollowRedirects is not passed on")
	}
	if sinkClientOptions(Options{SinkUseProxy: true}).Proxy == nil {
		t.Errorf("SinkUseProxy does not set a proxy")
	}
	deny := []netip.Prefix{}
	if got := sinkClientOptions(Options{SinkDeny: deny}).Deny; got == nil {
		t.Errorf("an empty SinkDeny became nil, which means the default list")
	}
}
