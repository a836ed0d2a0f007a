package sink

import (
	"net/netip"
	"strings"
)

// ParseCIDRs reads a comma-separated list of address ranges, as --sink-deny-cidrs takes
// them; empty gives an empty, non-nil list (deny nothing), unlike nil (DefaultDeny).
func ParseCIDRs(list string) ([]netip.Prefix, error) {
	out := []netip.Prefix{}
	for part := range strings.SplitSeq(list, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// FormatCIDRs writes ranges as ParseCIDRs reads them.
func FormatCIDRs(prefixes []netip.Prefix) string {
	parts := make([]string, len(prefixes))
	for i, p := range prefixes {
		parts[i] = p.String()
	}
	return strings.Join(parts, ",")
}
