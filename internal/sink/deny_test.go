package sink

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"

	. "github.com/onsi/gomega"
)

func defaultClients() *Clients { return NewClients(ClientOptions{}) }

// The default list must hold against every way of writing the addresses attackers aim at.
// Pure: checkDial is handed the address, nothing is dialled.
func TestDefaultDenyAtDial(t *testing.T) {
	c := defaultClients()
	denied := []string{
		"169.254.169.254:80",          // AWS, GCP, Azure, OpenStack metadata
		"[::ffff:169.254.169.254]:80", // the same, IPv4-mapped
		"169.254.1.1:80",              // link-local
		"[fe80::1]:80",
		"[fe80::1%eth0]:80",  // link-local v6 is usually dialled with a zone
		"[fd00:ec2::254]:80", // AWS metadata over IPv6
		"100.100.100.200:80", // Alibaba Cloud metadata
		"0.0.0.0:80",         // "this host": Linux connects it to localhost
		"0.1.2.3:80",
		"[::]:80",
		"[::ffff:0.0.0.0]:80",
	}
	for _, addr := range denied {
		if err := c.deny.checkDial("tcp", addr, nil); !errors.Is(err, ErrDeniedAddress) {
			t.Errorf("checkDial(%s) = %v, want denied", addr, err)
		}
	}
	allowed := []string{"127.0.0.1:80", "[::1]:80", "10.0.0.1:80", "8.8.8.8:443", "100.100.100.201:80",
		"[fd00:ec2::253]:80", "[2001:db8::1]:80", "1.0.0.0:80"}
	for _, addr := range allowed {
		if err := c.deny.checkDial("tcp", addr, nil); err != nil {
			t.Errorf("checkDial(%s) = %v, want allowed", addr, err)
		}
	}
}

func TestNilDenyIsTheDefaultAndEmptyDeniesNothing(t *testing.T) {
	g := NewWithT(t)
	g.Expect(defaultClients().deny.checkDial("tcp", "169.254.169.254:80", nil)).To(MatchError(ErrDeniedAddress))
	g.Expect(NewClients(ClientOptions{Deny: []netip.Prefix{}}).deny.checkDial("tcp", "169.254.169.254:80", nil)).To(Succeed())
}

// A range written as IPv4-mapped IPv6 denies the IPv4 addresses it means.
func TestMappedDenyRange(t *testing.T) {
	c := NewClients(ClientOptions{Deny: []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")}})
	if err := c.deny.checkDial("tcp", "10.1.2.3:80", nil); !errors.Is(err, ErrDeniedAddress) {
		t.Errorf("checkDial(10.1.2.3) = %v, want denied by ::ffff:10.0.0.0/104", err)
	}
}

func TestParseIPv4Loose(t *testing.T) {
	cases := []struct {
		in, want string // want "" means not an address
	}{
		{"169.254.169.254", "169.254.169.254"},
		{"2852039166", "169.254.169.254"},
		{"0251.0376.0251.0376", "169.254.169.254"},
		{"0xa9.0xfe.0xa9.0xfe", "169.254.169.254"},
		{"0XA9FEA9FE", "169.254.169.254"},
		{"0251.254.0xa9.254", "169.254.169.254"},
		{"169.254.43518", "169.254.169.254"},
		{"169.16689662", "169.254.169.254"},
		{"169.254.169.254.", "169.254.169.254"}, // browsers drop one trailing dot
		{"2130706434", "127.0.0.2"},
		{"0177.0.0.02", "127.0.0.2"},
		{"0", "0.0.0.0"},
		{"0x", "0.0.0.0"},
		{"4294967295", "255.255.255.255"},
		{"", ""},
		{".", ""},
		{"1..2", ""},
		{"1.2.3.4.5", ""},
		{"256.1.1.1", ""},
		{"1.2.3.256", ""},
		{"1.2.65536", ""},
		{"4294967296", ""},
		{"99999999999999999999999", ""},
		{"08", ""},
		{"0x1g", ""},
		{"1_0", ""},
		{"+1", ""},
		{"1.2.3.-4", ""},
		{"1e3", ""},
		{" 1.2.3.4", ""},
		{"example.com", ""},
		{"1234.example", ""},
	}
	for _, tc := range cases {
		got, ok := parseIPv4Loose(tc.in)
		switch {
		case tc.want == "" && ok:
			t.Errorf("parseIPv4Loose(%q) = %s, want not an address", tc.in, got)
		case tc.want != "" && (!ok || got != netip.MustParseAddr(tc.want)):
			t.Errorf("parseIPv4Loose(%q) = %s, %v, want %s", tc.in, got, ok, tc.want)
		}
	}
}

// Hosts of URLs are refused before DNS or a proxy sees them, whatever form the address takes.
func TestCheckHost(t *testing.T) {
	g := NewWithT(t)
	c := defaultClients()
	for _, host := range []string{"169.254.169.254", "2852039166", "0251.0376.0251.0376", "0xa9fea9fe",
		"169.254.169.254.", "::ffff:169.254.169.254", "::ffff:a9fe:a9fe", "fe80::1%eth0", "fe80::1", "0", "0.0.0.0",
		"::", "100.100.100.200", "fd00:ec2::254"} {
		g.Expect(c.deny.checkHost(host)).To(MatchError(ErrDeniedAddress), host)
	}
	for _, host := range []string{"example.com", "hooks.example.com", "sink.team-a.svc", "10.0.0.1", "127.0.0.1",
		"2130706433", "::1", "1234.example", ""} {
		g.Expect(c.deny.checkHost(host)).To(Succeed(), host)
	}
	g.Expect(c.deny.checkHost("2852039166")).To(MatchError(
		"2852039166 (169.254.169.254) is in 169.254.0.0/16: address denied by the operator's sink policy"))
	g.Expect(c.deny.checkHost("169.254.169.254")).To(MatchError(
		"169.254.169.254 is in 169.254.0.0/16: address denied by the operator's sink policy"))
}

// deniedListener serves on 127.0.0.2, denied for the test, and counts connections made to it.
func deniedListener(t *testing.T) (port string, conns *atomic.Int32, clients *Clients) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	conns = &atomic.Int32{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	srv.Listener = ln
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	clients = NewClients(ClientOptions{Deny: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}})
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port), conns, clients
}

func TestDeniedAddressInEveryFormIsRefused(t *testing.T) {
	port, conns, clients := deniedListener(t)
	cl, err := clients.For(TLSMaterial{})
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"127.0.0.2", "2130706434", "0x7f000002", "0177.0.0.02", "127.2", "[::ffff:127.0.0.2]",
		"[::ffff:7f00:2]"} {
		t.Run(host, func(t *testing.T) {
			g := NewWithT(t)
			w := &Webhook{URL: "http://" + host + ":" + port + "/hook", Client: cl}
			err := w.Send(t.Context(), testMessage())
			g.Expect(err).To(MatchError(ErrDeniedAddress))
			g.Expect(err).To(MatchError(ContainSubstring("is in 127.0.0.2/32")))
			g.Expect(Retryable(err)).To(BeFalse())
			g.Expect(FailureReason(err)).To(Equal(ReasonDenied))
		})
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("the denied listener got %d connections", n)
	}
}

// The check at dial time sees the address actually dialled: what a name resolved to, in
// whatever form the dialer got it.
func TestDialTimeCheck(t *testing.T) {
	port, conns, clients := deniedListener(t)
	cl, err := clients.For(TLSMaterial{})
	if err != nil {
		t.Fatal(err)
	}
	dial := cl.Transport.(*guardedTransport).dial
	for _, addr := range []string{"127.0.0.2:" + port, "[::ffff:127.0.0.2]:" + port} {
		conn, err := dial(t.Context(), "tcp", addr)
		if conn != nil {
			_ = conn.Close()
		}
		if !errors.Is(err, ErrDeniedAddress) {
			t.Errorf("dial %s = %v, want denied", addr, err)
		}
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("the denied listener got %d connections", n)
	}

	// localhost comes from /etc/hosts: only the dial-time check can know where it leads.
	g := NewWithT(t)
	allowed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer allowed.Close()
	_, allowedPort, _ := net.SplitHostPort(allowed.Listener.Addr().String())
	loopback := NewClients(ClientOptions{Deny: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("::1/128")}})
	cl, err = loopback.For(TLSMaterial{})
	g.Expect(err).NotTo(HaveOccurred())
	w := &Webhook{URL: "http://localhost:" + allowedPort + "/", Client: cl}
	g.Expect(w.Send(t.Context(), testMessage())).To(MatchError(ErrDeniedAddress))
}
