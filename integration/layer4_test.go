package integration

import (
	"bufio"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/mholt/caddy-l4"

	_ "github.com/caddy-sticky/sticky/layer4"
)

// l4Backend is a real TCP or UDP server on 127.0.0.1 that answers every
// connection (TCP) or datagram (UDP) with its name.
type l4Backend struct {
	Name string
	// Addr is the address as caddy-l4's proxy dials it: udp/ prefixed for UDP
	Addr string

	ln       net.Listener
	pc       net.PacketConn
	stopOnce sync.Once
}

func startTCPBackend(t testing.TB, name, listen string) *l4Backend {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	b := &l4Backend{Name: name, Addr: ln.Addr().String(), ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = fmt.Fprintf(c, "%s\n", name)
			_ = c.Close()
		}
	}()
	t.Cleanup(b.Stop)
	return b
}

func startUDPBackend(t testing.TB, name string) *l4Backend {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &l4Backend{Name: name, Addr: "udp/" + pc.LocalAddr().String(), pc: pc}
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte(name), from)
		}
	}()
	t.Cleanup(b.Stop)
	return b
}

// Stop kills the backend: a TCP port refuses connections from now on.
func (b *l4Backend) Stop() {
	b.stopOnce.Do(func() {
		if b.ln != nil {
			_ = b.ln.Close()
		}
		if b.pc != nil {
			_ = b.pc.Close()
		}
	})
}

func l4Upstreams(bs []*l4Backend) string {
	addrs := make([]string, len(bs))
	for i, b := range bs {
		addrs[i] = b.Addr
	}
	return strings.Join(addrs, " ")
}

// clientIP is the loopback address of the i-th test client (127.0.1.i):
// every client connects from its own source address, as distinct hosts do.
func clientIP(i int) string { return fmt.Sprintf("127.0.1.%d", i+1) }

// tcpAs opens one TCP connection to port from ip, optionally sends a PROXY
// header first, and returns the name of the backend that answered.
func tcpAs(t testing.TB, ip string, port int, proxyHeader string) string {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("client %s: %v", ip, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if proxyHeader != "" {
		if _, err := c.Write([]byte(proxyHeader)); err != nil {
			t.Fatal(err)
		}
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("client %s: no answer through the proxy: %v", ip, err)
	}
	return strings.TrimSpace(line)
}

// udpSession sends n datagrams to port from one new socket on ip (one
// caddy-l4 UDP session) and returns the backends that answered, in order.
func udpSession(t testing.TB, ip string, port, n int) []string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	var got []string
	buf := make([]byte, 1500)
	for i := 0; i < n; i++ {
		if _, err := c.WriteTo([]byte(fmt.Sprintf("datagram %d", i)), to); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		m, _, err := c.ReadFrom(buf)
		if err != nil {
			t.Fatalf("client %s: datagram %d unanswered: %v", ip, i, err)
		}
		got = append(got, string(buf[:m]))
	}
	return got
}

// l4Config is a Caddy with only the layer4 app (no HTTP server): a TCP
// listener on tcpPort proxying to tcp with table pg, a UDP listener on
// udpPort proxying to udp with table dns, and a TCP listener on ppPort that
// takes the PROXY protocol in front of table pp. The fallback is
// weighted_round_robin (equal weights: round robin), which spreads clients
// over every backend deterministically; caddy-l4 v0.1.2's round_robin reads
// its counter without synchronisation, which the race detector reports.
func l4Config(t *testing.T, adminPort, tcpPort, udpPort, ppPort int, tcp, udp []*l4Backend, tryInterval string) []byte {
	return adapt(t, fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
	storage file_system %s
	log {
		level ERROR
	}
	sticky {
		table pg {
			type ip
		}
		table dns {
			type ip
		}
		table pp {
			type ip
		}
	}
	layer4 {
		127.0.0.1:%d {
			route {
				proxy %s {
					lb_policy stick_table pg {
						fallback weighted_round_robin
					}
					lb_try_duration 5s
					lb_try_interval %s
				}
			}
		}
		udp/127.0.0.1:%d {
			route {
				proxy %s {
					lb_policy stick_table dns {
						fallback weighted_round_robin
					}
				}
			}
		}
		127.0.0.1:%d {
			route {
				proxy_protocol {
					allow 127.0.0.0/8
				}
				proxy %s {
					lb_policy stick_table pp {
						fallback weighted_round_robin
					}
				}
			}
		}
	}
}
`, adminPort, t.TempDir(), tcpPort, l4Upstreams(tcp), tryInterval, udpPort, l4Upstreams(udp), ppPort, l4Upstreams(tcp)))
}

// tableEntries reads a table through the admin API: key -> server.
func tableEntries(t *testing.T, adminPort int, table string) map[string]string {
	t.Helper()
	var page apiPage
	adminJSON(t, adminPort, "GET", "/sticky/tables/"+url.PathEscape(table)+"?limit=1000", "", 200, &page)
	out := map[string]string{}
	for _, e := range page.Entries {
		out[e.Key] = e.Server
	}
	return out
}

func byName(bs []*l4Backend) map[string]*l4Backend {
	m := map[string]*l4Backend{}
	for _, b := range bs {
		m[b.Name] = b
	}
	return m
}

// TestLayer4TCPStickTable runs TCP clients on distinct source addresses
// through caddy-l4 with the stick_table policy: each keeps its backend, a
// killed backend moves only its clients (re-stuck where they landed), the
// admin API shows the entries, and a reload keeps them.
func TestLayer4TCPStickTable(t *testing.T) {
	tcp := []*l4Backend{startTCPBackend(t, "pg1", "127.0.0.1:0"), startTCPBackend(t, "pg2", "127.0.0.1:0"), startTCPBackend(t, "pg3", "127.0.0.1:0")}
	udp := []*l4Backend{startUDPBackend(t, "dns1")}
	names := byName(tcp)
	adminPort, tcpPort, udpPort, ppPort := freePort(t), freePort(t), freePort(t), freePort(t)
	loadCaddy(t, l4Config(t, adminPort, tcpPort, udpPort, ppPort, tcp, udp, "50ms"))

	const clients = 12
	home := map[string]string{}
	perBackend := map[string]int{}
	for i := range clients {
		ip := clientIP(i)
		home[ip] = tcpAs(t, ip, tcpPort, "")
		perBackend[home[ip]]++
	}
	if len(perBackend) != 3 {
		t.Fatalf("weighted_round_robin placed %d clients on %v, want all 3 backends", clients, perBackend)
	}
	for round := range 3 {
		for ip, want := range home {
			if got := tcpAs(t, ip, tcpPort, ""); got != want {
				t.Fatalf("round %d: client %s moved from %s to %s", round, ip, want, got)
			}
		}
	}
	entries := tableEntries(t, adminPort, "pg")
	if len(entries) != clients {
		t.Fatalf("table pg has %d entries, want %d: %v", len(entries), clients, entries)
	}
	for ip, name := range home {
		if entries[ip] != names[name].Addr {
			t.Fatalf("entry of %s is %q, but it reached %s (%s)", ip, entries[ip], name, names[name].Addr)
		}
	}

	// Kill the backend of the first client.
	victim := names[home[clientIP(0)]]
	victim.Stop()
	moved := map[string]string{}
	for ip, was := range home {
		got := tcpAs(t, ip, tcpPort, "")
		switch {
		case was == victim.Name && got == victim.Name:
			t.Fatalf("client %s reached killed %s", ip, victim.Name)
		case was == victim.Name:
			moved[ip] = got
		case got != was:
			t.Fatalf("client %s of %s (alive) moved to %s when %s died", ip, was, got, victim.Name)
		}
	}
	if len(moved) != perBackend[victim.Name] {
		t.Fatalf("%d clients moved, %s had %d", len(moved), victim.Name, perBackend[victim.Name])
	}
	// the moved clients are re-stuck: same new backend every time, in the table
	entries = tableEntries(t, adminPort, "pg")
	for ip, now := range moved {
		for range 2 {
			if got := tcpAs(t, ip, tcpPort, ""); got != now {
				t.Fatalf("moved client %s went to %s, then %s", ip, now, got)
			}
		}
		if entries[ip] != names[now].Addr {
			t.Fatalf("moved client %s: entry %q, want %s", ip, entries[ip], names[now].Addr)
		}
		home[ip] = now
	}

	// A reload (a changed config through the admin API) keeps every entry.
	before := tableEntries(t, adminPort, "pg")
	res := postJSON(t, fmt.Sprintf("http://127.0.0.1:%d/load", adminPort), l4Config(t, adminPort, tcpPort, udpPort, ppPort, tcp, udp, "60ms"), nil)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("reload: status %d", res.StatusCode)
	}
	after := tableEntries(t, adminPort, "pg")
	if len(after) != len(before) {
		t.Fatalf("reload: %d entries before, %d after", len(before), len(after))
	}
	for k, v := range before {
		if after[k] != v {
			t.Fatalf("reload changed %s from %s to %q", k, v, after[k])
		}
	}
	for ip, want := range home {
		if got := tcpAs(t, ip, tcpPort, ""); got != want {
			t.Fatalf("after the reload %s moved from %s to %s", ip, want, got)
		}
	}

	// The lookups are counted in the sticky metrics, by outcome: the moved
	// clients' first connections were redispatched after a refused dial.
	_, _, metrics := adminCall(t, adminPort, "GET", "/metrics", "")
	for _, outcome := range []string{"miss", "hit", "redispatched"} {
		if n := metricValue(string(metrics), `caddy_sticky_table_lookups_total{outcome="`+outcome+`",table="pg"}`); n < 1 {
			t.Errorf("no %s lookups counted for table pg", outcome)
		}
	}
	if n := metricValue(string(metrics), `caddy_sticky_table_lookups_total{outcome="redispatched",table="pg"}`); n < float64(len(moved)) {
		t.Errorf("%v redispatched lookups, %d clients moved", n, len(moved))
	}

	// Draining a live backend through the admin API: its clients stay, new
	// clients go elsewhere.
	target := names[home[clientIP(0)]]
	adminJSON(t, adminPort, "POST", "/sticky/servers/"+url.PathEscape(target.Addr)+"/drain", "", 200, nil)
	t.Cleanup(func() { adminCall(t, adminPort, "DELETE", "/sticky/servers/"+url.PathEscape(target.Addr)+"/drain", "") })
	for ip, want := range home {
		if got := tcpAs(t, ip, tcpPort, ""); got != want {
			t.Fatalf("drain of %s moved %s from %s to %s", target.Name, ip, want, got)
		}
	}
	for i := range 8 {
		if got := tcpAs(t, clientIP(200+i), tcpPort, ""); got == target.Name || got == victim.Name {
			t.Fatalf("new client %s placed on %s (drained %s, dead %s)", clientIP(200+i), got, target.Name, victim.Name)
		}
	}
}

// metricValue finds one sample in Prometheus text output; -1 if absent.
func metricValue(text, series string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err == nil {
				return v
			}
		}
	}
	return -1
}

// TestLayer4UDPStickTable: a UDP client keeps its backend across the
// datagrams of a session and across sessions (new source ports), and when
// its backend leaves the config only its clients move, re-stuck.
func TestLayer4UDPStickTable(t *testing.T) {
	tcp := []*l4Backend{startTCPBackend(t, "pg1", "127.0.0.1:0")}
	udp := []*l4Backend{startUDPBackend(t, "dns1"), startUDPBackend(t, "dns2"), startUDPBackend(t, "dns3")}
	names := byName(udp)
	adminPort, tcpPort, udpPort, ppPort := freePort(t), freePort(t), freePort(t), freePort(t)
	loadCaddy(t, l4Config(t, adminPort, tcpPort, udpPort, ppPort, tcp, udp, "50ms"))

	const clients = 9
	home := map[string]string{}
	for i := range clients {
		ip := clientIP(20 + i)
		answers := udpSession(t, ip, udpPort, 4)
		for _, a := range answers[1:] {
			if a != answers[0] {
				t.Fatalf("client %s: one session answered by %v", ip, answers)
			}
		}
		home[ip] = answers[0]
	}
	used := map[string]bool{}
	for ip, want := range home {
		used[want] = true
		for s := range 2 { // new sockets: new caddy-l4 sessions, same backend
			if got := udpSession(t, ip, udpPort, 2); got[0] != want || got[1] != want {
				t.Fatalf("client %s, session %d: %v, want %s", ip, s+2, got, want)
			}
		}
	}
	if len(used) != 3 {
		t.Fatalf("weighted_round_robin placed %d UDP clients on %d backends", clients, len(used))
	}
	entries := tableEntries(t, adminPort, "dns")
	for ip, name := range home {
		if entries[ip] != names[name].Addr {
			t.Fatalf("entry of %s is %q, want %s", ip, entries[ip], names[name].Addr)
		}
	}

	// A UDP backend that dies cannot be seen by a dial (UDP has no
	// handshake): the operator removes it from the config.
	victim := names[home[clientIP(20)]]
	var rest []*l4Backend
	for _, b := range udp {
		if b != victim {
			rest = append(rest, b)
		}
	}
	res := postJSON(t, fmt.Sprintf("http://127.0.0.1:%d/load", adminPort), l4Config(t, adminPort, tcpPort, udpPort, ppPort, tcp, rest, "50ms"), nil)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("reload: status %d", res.StatusCode)
	}
	victim.Stop()
	for ip, was := range home {
		got := udpSession(t, ip, udpPort, 2)
		if got[0] != got[1] {
			t.Fatalf("client %s: one session answered by %v", ip, got)
		}
		switch {
		case got[0] == victim.Name:
			t.Fatalf("client %s reached removed %s", ip, victim.Name)
		case was != victim.Name && got[0] != was:
			t.Fatalf("client %s of %s moved to %s", ip, was, got[0])
		}
		home[ip] = got[0]
	}
	entries = tableEntries(t, adminPort, "dns")
	for ip, name := range home {
		if entries[ip] != names[name].Addr {
			t.Fatalf("after the move, entry of %s is %q, want %s", ip, entries[ip], names[name].Addr)
		}
		if got := udpSession(t, ip, udpPort, 1); got[0] != name {
			t.Fatalf("client %s re-stuck to %s, then reached %s", ip, name, got[0])
		}
	}
}

// TestLayer4ProxyProtocolClient: behind caddy-l4's proxy_protocol handler,
// the key is the client address the PROXY header carries, not the address
// of the load balancer that sent it.
func TestLayer4ProxyProtocolClient(t *testing.T) {
	tcp := []*l4Backend{startTCPBackend(t, "pg1", "127.0.0.1:0"), startTCPBackend(t, "pg2", "127.0.0.1:0")}
	udp := []*l4Backend{startUDPBackend(t, "dns1")}
	adminPort, tcpPort, udpPort, ppPort := freePort(t), freePort(t), freePort(t), freePort(t)
	loadCaddy(t, l4Config(t, adminPort, tcpPort, udpPort, ppPort, tcp, udp, "50ms"))

	header := func(client string) string {
		return fmt.Sprintf("PROXY TCP4 %s 127.0.0.1 40000 %d\r\n", client, ppPort)
	}
	home := map[string]string{}
	for i, client := range []string{"192.0.2.10", "192.0.2.11", "192.0.2.12", "192.0.2.13"} {
		home[client] = tcpAs(t, clientIP(40+i), ppPort, header(client))
	}
	entries := tableEntries(t, adminPort, "pp")
	if len(entries) != len(home) {
		t.Fatalf("table pp: %v, want the 4 PROXY clients", entries)
	}
	for client, name := range home {
		if entries[client] == "" {
			t.Fatalf("no entry for PROXY client %s: %v", client, entries)
		}
		// the same client behind another balancer address: same backend
		for i := range 3 {
			if got := tcpAs(t, clientIP(50+i), ppPort, header(client)); got != name {
				t.Fatalf("PROXY client %s via %s: %s, want %s", client, clientIP(50+i), got, name)
			}
		}
	}
}

// TestLayer4Example runs examples/layer4/Caddyfile as its comments say,
// with TCP servers standing in for the two PostgreSQL servers.
func TestLayer4Example(t *testing.T) {
	text, ports := loadExample(t, "../examples/layer4/Caddyfile", "5432", "5433", "5434", "2019")
	pg := []*l4Backend{
		startTCPBackend(t, "pg1", fmt.Sprintf("127.0.0.1:%d", ports["5433"])),
		startTCPBackend(t, "pg2", fmt.Sprintf("127.0.0.1:%d", ports["5434"])),
	}
	loadCaddy(t, adapt(t, text))
	port := ports["5432"]

	home := map[string]string{}
	used := map[string]int{}
	for i := range 16 {
		ip := clientIP(60 + i)
		home[ip] = tcpAs(t, ip, port, "")
		used[home[ip]]++
		if again := tcpAs(t, ip, port, ""); again != home[ip] {
			t.Fatalf("client %s: %s, then %s", ip, home[ip], again)
		}
	}
	if len(used) != 2 {
		t.Fatalf("least_conn placed 16 clients as %v", used)
	}
	entries := tableEntries(t, ports["2019"], "pg")
	for ip, name := range home {
		if want := byName(pg)[name].Addr; entries[ip] != want {
			t.Fatalf("entry of %s: %q, want %s", ip, entries[ip], want)
		}
	}
	// pg1 goes away: its clients reach pg2 and stay there; pg2's never moved
	pg[0].Stop()
	for ip, was := range home {
		if got := tcpAs(t, ip, port, ""); got != "pg2" {
			t.Fatalf("client %s (on %s) reached %s with pg1 down", ip, was, got)
		}
	}
	entries = tableEntries(t, ports["2019"], "pg")
	for ip := range home {
		if entries[ip] != pg[1].Addr {
			t.Fatalf("client %s not re-stuck to pg2: %q", ip, entries[ip])
		}
	}

	// pg1 returns and Caddy restarts (a full stop and a new start): the
	// example persists its table, so every client still goes to pg2 and
	// nobody moves back.
	startTCPBackend(t, "pg1", pg[0].Addr)
	if err := stopCaddy(); err != nil {
		t.Fatal(err)
	}
	if err := loadAgain(adapt(t, text)); err != nil {
		t.Fatal(err)
	}
	if entries = tableEntries(t, ports["2019"], "pg"); len(entries) != len(home) {
		t.Fatalf("after the restart the table has %d entries, want %d", len(entries), len(home))
	}
	for ip := range home {
		if got := tcpAs(t, ip, port, ""); got != "pg2" || entries[ip] != pg[1].Addr {
			t.Fatalf("after the restart client %s reached %s (entry %q), want pg2", ip, got, entries[ip])
		}
	}
}

// TestLayer4RefusesStoreBackedTable: the layer-4 policy works on the local
// table alone, so a table kept in a shared store is refused at load with
// a message that says so, rather than diverging from the fleet.
func TestLayer4RefusesStoreBackedTable(t *testing.T) {
	cfg, err := adaptErr(fmt.Sprintf(`{
	admin off
	persist_config off
	storage file_system %s
	sticky {
		store shared {
			valkey {
				address redis://127.0.0.1:1
			}
		}
		table pg {
			type ip
			store shared
		}
	}
	layer4 {
		127.0.0.1:%d {
			route {
				proxy 127.0.0.1:1 {
					lb_policy stick_table pg
				}
			}
		}
	}
}
`, t.TempDir(), freePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	err = loadAgain(cfg)
	if err == nil {
		_ = stopCaddy()
		t.Fatal("a layer-4 policy on a store-backed table was accepted")
	}
	if !strings.Contains(err.Error(), "shared store") {
		t.Fatalf("error %q does not say why", err)
	}
}
