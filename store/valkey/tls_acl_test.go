package valkey

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// writeTestPKI makes a self-signed CA and a server certificate for
// 127.0.0.1 signed by it, and returns the paths of the CA, the
// certificate and the key.
func writeTestPKI(t *testing.T) (caFile, certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "caddy-sticky test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(srvKey)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", srvDER), write("server.key", "EC PRIVATE KEY", keyDER)
}

// rediss:// with a private CA: placements, reads and invalidations work
// over TLS; a client that does not trust the CA never gets in.
func TestTLS(t *testing.T) {
	bin := redisBinary(t)
	caFile, certFile, keyFile := writeTestPKI(t)
	port := freePort(t)
	r := launch(t, bin, port, true, []string{"--port", "0", "--tls-port", strconv.Itoa(port),
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", caFile, "--tls-auth-clients", "no"})
	cfg := Config{Addresses: []string{r.url()}, CAFile: caFile}
	a := newInstance(t, r, "a", instanceOpts{cfg: cfg})
	b := newInstance(t, r, "b", instanceOpts{cfg: cfg})
	if a.store.Stats().BreakerOpen {
		t.Fatal("TLS connection failed")
	}
	k := a.key(t, "tls-user")
	if w, err := a.table.Place(bg(), k, "s1"); err != nil || w != "s1" {
		t.Fatalf("place over TLS: %q %v", w, err)
	}
	if srv, found, err := b.table.Lookup(bg(), b.key(t, "tls-user")); err != nil || !found || srv != "s1" {
		t.Fatalf("lookup over TLS: %q %v %v", srv, found, err)
	}
	eventually(t, 2*time.Second, "b caching", func() bool { return b.localServer(b.key(t, "tls-user")) == "s1" })
	if err := a.table.Pin(bg(), k, "s2"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "the pin invalidating b over TLS", func() bool { return b.localServer(b.key(t, "tls-user")) != "s1" })

	// The system roots do not include the test CA.
	untrusted, err := New("untrusted", Config{Addresses: []string{r.url()}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer untrusted.Close()
	if !untrusted.Stats().BreakerOpen {
		t.Fatal("a client without the CA connected")
	}
	// The port really is TLS-only: a plain client is not answered.
	plain, err := New("plain", Config{Addresses: []string{"redis://" + r.hostPort()}, Timeout: 200 * 1e6}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if !plain.Stats().BreakerOpen {
		t.Fatal("a plain-text client connected to the TLS port")
	}
	if c, err := tls.Dial("tcp", r.hostPort(), &tls.Config{InsecureSkipVerify: true}); err != nil {
		t.Fatalf("the server does not speak TLS: %v", err)
	} else {
		c.Close()
	}
}

// An ACL user limited to the prefix (~sticky:*) and to the commands the
// store needs does everything the store does; a store configured with a
// prefix outside the user's keys is refused by the server, and decides
// locally without opening its breaker (the server answers).
func TestACLUserLimitedToPrefix(t *testing.T) {
	r := startRedis(t)
	adm := r.admin(nil)
	if err := r.do(adm, "ACL", "SETUSER", "caddy", "on", ">s3cret", "resetkeys", "~sticky:*", "resetchannels",
		"-@all", "+@read", "+@write", "+@scripting", "+@connection", "+@keyspace", "-@dangerous").Error(); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Username: "caddy", Password: "s3cret"}
	a := newInstance(t, r, "a", instanceOpts{cfg: cfg})
	b := newInstance(t, r, "b", instanceOpts{cfg: cfg})
	if a.store.Stats().BreakerOpen {
		t.Fatal("the ACL user could not connect")
	}
	k := a.key(t, "acl-user")
	if w, err := a.table.Place(bg(), k, "s1"); err != nil || w != "s1" {
		t.Fatalf("place as the ACL user: %q %v", w, err)
	}
	if srv, found, err := b.table.Lookup(bg(), b.key(t, "acl-user")); err != nil || !found || srv != "s1" {
		t.Fatalf("lookup as the ACL user: %q %v %v", srv, found, err)
	}
	eventually(t, 2*time.Second, "b caching", func() bool { return b.localServer(b.key(t, "acl-user")) == "s1" })
	if err := a.table.Pin(bg(), k, "s2"); err != nil {
		t.Fatalf("pin (script) as the ACL user: %v", err)
	}
	eventually(t, 2*time.Second, "the pin invalidating b", func() bool { return b.localServer(b.key(t, "acl-user")) != "s1" })
	if _, _, err := a.table.List(bg(), "", 10); err != nil {
		t.Fatalf("list (SCAN) as the ACL user: %v", err)
	}
	if err := a.store.Drain(bg(), "s1"); err != nil {
		t.Fatalf("drain as the ACL user: %v", err)
	}
	if n, err := a.table.Clear(bg(), ""); err != nil || n != 1 {
		t.Fatalf("clear as the ACL user: %d %v", n, err)
	}

	// The same user with a prefix it may not touch.
	out, err := New("outside", Config{Addresses: []string{r.url()}, Username: "caddy", Password: "s3cret", Prefix: "other:"},
		Options{ProbeInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	local := a.local
	tb, _ := out.Bind("sessions", local)
	k2 := a.key(t, "outside-user")
	w, err := tb.Place(bg(), k2, "s9")
	if w != "s9" || err == nil {
		t.Fatalf("a refused write must fall back to the local decision and report an error: %q %v", w, err)
	}
	if got := a.localServer(k2); got != "s9" {
		t.Fatalf("local decision not kept: %q", got)
	}
	if out.Stats().BreakerOpen {
		t.Fatal("a refusal by the server opened the breaker")
	}
	t.Logf("refused store: %v", err)
}
