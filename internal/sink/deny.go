package sink

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
)

// ErrDeniedAddress is a sink address in a denied range: a policy decision, not retried.
var ErrDeniedAddress = errors.New("address denied by the operator's sink policy")

// DefaultDeny are the ranges sinks may never reach unless the operator is told otherwise:
// cloud metadata services and the addresses that lead back into the node.
var DefaultDeny = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),          // "this network": 0.0.0.0 connects to the node itself
	netip.MustParsePrefix("169.254.0.0/16"),     // link-local, with 169.254.169.254 (AWS, GCP, Azure, OpenStack)
	netip.MustParsePrefix("100.100.100.200/32"), // Alibaba Cloud metadata
	netip.MustParsePrefix("::/128"),             // unspecified: the node itself
	netip.MustParsePrefix("fe80::/10"),          // link-local
	netip.MustParsePrefix("fd00:ec2::254/128"),  // AWS metadata over IPv6
}

// denyList holds ranges in the form addresses are compared in: IPv4 ranges as IPv4, even
// when written as IPv4-mapped IPv6.
type denyList []netip.Prefix

func newDenyList(prefixes []netip.Prefix) denyList {
	out := make(denyList, 0, len(prefixes))
	for _, p := range prefixes {
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out
}

// match returns the range holding ip. The OS reaches the same host through an IPv4-mapped
// address or a zoned one, so both are compared bare (a zoned address matches no prefix).
func (d denyList) match(ip netip.Addr) (netip.Prefix, bool) {
	ip = ip.Unmap().WithZone("")
	for _, p := range d {
		if p.Contains(ip) {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// checkDial runs after DNS resolution, on the address actually dialled, so DNS rebinding
// or a redirect cannot reach a denied range.
func (d denyList) checkDial(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot read %q", ErrDeniedAddress, address)
	}
	if p, ok := d.match(ap.Addr()); ok {
		return fmt.Errorf("%s is in %s: %w", ap.Addr().Unmap().WithZone(""), p, ErrDeniedAddress)
	}
	return nil
}

// checkHost refuses a URL host that is a denied address in any form a resolver or browser
// would accept, before DNS or a proxy sees it: the error is clear, and a proxy would hide
// the destination from checkDial.
func (d denyList) checkHost(host string) error {
	ip, ok := hostAddr(host)
	if !ok {
		return nil
	}
	p, ok := d.match(ip)
	if !ok {
		return nil
	}
	bare := ip.Unmap().WithZone("")
	if host == bare.String() {
		return fmt.Errorf("%s is in %s: %w", host, p, ErrDeniedAddress)
	}
	return fmt.Errorf("%s (%s) is in %s: %w", host, bare, p, ErrDeniedAddress)
}

// hostAddr reads a URL host (without brackets) as an address, when it is one.
func hostAddr(host string) (netip.Addr, bool) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip, true
	}
	return parseIPv4Loose(host)
}

// parseIPv4Loose reads IPv4 as inet_aton and browsers do: one to four parts, each decimal,
// octal (leading 0) or hex (0x), the last filling the remaining bytes, so 2852039166,
// 0251.0376.0251.0376 and 169.254.43518 are all 169.254.169.254.
func parseIPv4Loose(s string) (netip.Addr, bool) {
	s = strings.TrimSuffix(s, ".")
	parts := strings.Split(s, ".")
	if s == "" || len(parts) > 4 {
		return netip.Addr{}, false
	}
	var n uint64
	for i, part := range parts {
		v, ok := parseIPv4Part(part)
		last := i == len(parts)-1
		if !ok || (!last && v > 0xff) || (last && v>>(8*(4-i)) != 0) {
			return netip.Addr{}, false
		}
		if last {
			n = n<<(8*(4-i)) | v
		} else {
			n = n<<8 | v
		}
	}
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), true
}

func parseIPv4Part(part string) (uint64, bool) {
	digits, base := part, 10
	switch {
	case len(part) >= 2 && part[0] == '0' && (part[1] == 'x' || part[1] == 'X'):
		digits, base = part[2:], 16
		if digits == "" {
			return 0, true // "0x" is 0 to inet_aton and browsers alike
		}
	case len(part) > 1 && part[0] == '0':
		digits, base = part[1:], 8
	}
	v, err := strconv.ParseUint(digits, base, 32)
	return v, err == nil
}
