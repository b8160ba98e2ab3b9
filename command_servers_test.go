package sticky

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-sticky/sticky/sticktable"
)

func TestCLIServersAndDrainWait(t *testing.T) {
	prev := drainPollInterval
	drainPollInterval = 20 * time.Millisecond
	t.Cleanup(func() { drainPollInterval = prev })
	t.Cleanup(func() { state.drained.Set("a:1", false) })
	t1 := adminTable(t, "t1", sticktable.Config{Type: sticktable.KeyString}, "")
	t2 := adminTable(t, "t2", sticktable.Config{Type: sticktable.KeyString}, "")
	adminPublish(t, t1, t2)
	for _, k := range []string{"k1", "k2", "k3"} {
		if _, err := t1.table.Store(k, "a:1"); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"k4", "k5"} {
		if _, err := t2.table.Store(k, "a:1"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := t2.table.Store("k6", "b:1"); err != nil {
		t.Fatal(err)
	}
	addr := cliServer(t)
	out := cliOK(t, addr, "servers")
	rs := rows(out)
	if len(rs) != 3 || strings.Join(rs[1][:3], " ") != "a:1 active 5" || rs[1][4] != "ago" || !strings.Contains(out, "t1=3 t2=2") || strings.Join(rs[2][:3], " ") != "b:1 active 1" {
		t.Fatalf("servers:\n%s", out)
	}

	// Metrics: one gauge per table and server.
	reg := prometheus.NewPedanticRegistry()
	if err := registerTableMetrics(reg); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		if mf.GetName() != "caddy_sticky_server_stuck" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			got = append(got, l["table"]+"/"+l["server"]+"="+strconv.Itoa(int(m.GetGauge().GetValue())))
		}
	}
	if strings.Join(got, " ") != "t1/a:1=3 t2/a:1=2 t2/b:1=1" {
		t.Fatalf("caddy_sticky_server_stuck: %v", got)
	}

	if _, _, err := cliRun(t, addr, "drain", "a:1", "--timeout", "1s"); err == nil || !strings.Contains(err.Error(), "only applies with --wait") {
		t.Fatalf("--timeout without --wait: %v", err)
	}
	start := time.Now()
	out, _, err = cliRun(t, addr, "drain", "a:1", "--wait", "--timeout", "200ms")
	if err == nil || !strings.Contains(err.Error(), "5 users still stuck to a:1") || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("wait with users left: %v after %s\n%s", err, time.Since(start), out)
	}
	if !strings.Contains(out, "a:1: 5 stuck users left (t1=3 t2=2)") || strings.Contains(out, "\r") {
		t.Fatalf("progress:\n%q", out)
	}
	// the users leave while it waits
	go func() {
		time.Sleep(100 * time.Millisecond)
		t1.table.ClearServer("a:1")
		time.Sleep(100 * time.Millisecond)
		t2.table.ClearServer("a:1")
	}()
	out, _, err = cliRun(t, addr, "drain", "a:1", "--wait", "--timeout", "10s")
	if err != nil || !strings.Contains(out, "a:1 was already drained") || !strings.Contains(out, "a:1: no users stuck, safe to stop") {
		t.Fatalf("wait: %v\n%s", err, out)
	}
	if !strings.Contains(out, "a:1: 2 stuck users left") {
		t.Errorf("no progress line after the first table emptied:\n%s", out)
	}
	if n := t1.table.Stuck("a:1") + t2.table.Stuck("a:1"); n != 0 {
		t.Fatalf("returned with %d entries left", n)
	}
	// undrained while waiting: fail rather than wait for nothing
	if _, err := t1.table.Store("k1", "a:1"); err != nil {
		t.Fatal(err)
	}
	go func() { time.Sleep(60 * time.Millisecond); state.drained.Set("a:1", false) }()
	if _, _, err := cliRun(t, addr, "drain", "a:1", "--wait"); err == nil || !strings.Contains(err.Error(), "no longer drained") {
		t.Fatalf("undrained during the wait: %v", err)
	}
}
