package sink

import (
	"net/netip"
	"testing"
)

// The --sink-deny-cidrs default is DefaultDeny written out: reading it back must give
// the same ranges.
func TestCIDRsRoundTrip(t *testing.T) {
	list := FormatCIDRs(DefaultDeny)
	if list != "0.0.0.0/8,169.254.0.0/16,100.100.100.200/32,::/128,fe80::/10,fd00:ec2::254/128" {
		t.Errorf("FormatCIDRs(DefaultDeny) = %q", list)
	}
	got, err := ParseCIDRs(list)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(DefaultDeny) {
		t.Fatalf("ParseCIDRs(%q) = %v", list, got)
	}
	for i := range got {
		if got[i] != DefaultDeny[i] {
			t.Errorf("range %d: %s, want %s", i, got[i], DefaultDeny[i])
		}
	}
}

// An empty flag denies nothing: an empty, non-nil list, unlike nil, which is the default.
func TestParseEmptyCIDRs(t *testing.T) {
	for _, list := range []string{"", " , "} {
		got, err := ParseCIDRs(list)
		if err != nil || got == nil || len(got) != 0 {
			t.Errorf("ParseCIDRs(%q) = %#v, %v; want an empty, non-nil list", list, got, err)
		}
	}
	if _, err := ParseCIDRs("169.254.169.254"); err == nil {
		t.Errorf("an address without a prefix length is accepted")
	}
	got, err := ParseCIDRs(" 10.1.2.3/8 ")
	if err != nil || len(got) != 1 || got[0] != netip.MustParsePrefix("10.0.0.0/8") {
		t.Errorf("ParseCIDRs(10.1.2.3/8) = %v, %v; want 10.0.0.0/8", got, err)
	}
}
