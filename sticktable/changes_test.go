package sticktable

import (
	"strconv"
	"testing"
	"time"
)

func TestChangeFeed(t *testing.T) {
	var log changeLog
	tab, clk := newTestTable(t, Config{Type: KeyInteger, Expire: time.Hour, Retention: 2 * time.Hour}, Options{Node: "n1", OnChange: log.add})
	expect := func(what string, ops ...Op) []Change {
		t.Helper()
		got := log.take()
		if len(got) != len(ops) {
			t.Fatalf("%s: %d changes %+v, want %v", what, len(got), got, ops)
		}
		for i := range ops {
			if got[i].Op != ops[i] {
				t.Fatalf("%s: change %d is %v, want %v", what, i, got[i].Op, ops[i])
			}
		}
		return got
	}

	e := mustStore(t, tab, "1", "s1")
	c := expect("new key", OpStore)[0]
	if c.Key.String() != "1" || c.Server != "s1" || c.Version != e.Version || c.Node != "n1" || c.TTL != time.Hour {
		t.Fatalf("store change %+v", c)
	}
	mustStore(t, tab, "1", "s1")
	expect("same server within the granularity")
	tab.Lookup("1")
	expect("hit within the granularity")

	clk.Add(2 * time.Second)
	mustStore(t, tab, "1", "s1")
	c = expect("same server later", OpRefresh)[0]
	if c.Version != e.Version || c.TTL != time.Hour {
		t.Fatalf("refresh must keep the version: %+v", c)
	}
	clk.Add(2 * time.Second)
	tab.Lookup("1")
	expect("hit later", OpRefresh)
	tab.Get("1")
	expect("Get")
	tab.Lookup("2")
	expect("miss")

	mustStore(t, tab, "1", "s2")
	c = expect("server change", OpStore)[0]
	if c.Version <= e.Version || c.Server != "s2" {
		t.Fatalf("server change %+v", c)
	}
	tab.Pin("1", "s2")
	if c2 := expect("pin of the same server", OpPin)[0]; c2.Version <= c.Version {
		t.Fatal("pin must bump the version")
	}
	tab.Delete("1")
	c = expect("delete", OpDelete)[0]
	if c.Server != "" || c.TTL != 2*time.Hour {
		t.Fatalf("delete change %+v", c)
	}
	tab.Delete("1")
	expect("delete of a tombstone")

	for i := range 6 {
		mustStore(t, tab, strconv.Itoa(10+i), "s"+strconv.Itoa(i%2))
	}
	log.take()
	tab.ClearServer("s1")
	expect("clear server", OpDelete, OpDelete, OpDelete)
	tab.Clear()
	c = expect("clear", OpClear)[0]
	if v, n := tab.ClearMark(); c.Version != v || c.Node != n || n != "n1" {
		t.Fatalf("clear change %+v", c)
	}

	// Remote changes are not echoed.
	tab.Apply(Change{Op: OpStore, Key: key(t, tab, "5"), Server: "s", Version: v0 << 1, Node: "n2", TTL: time.Minute})
	expect("apply")

	tab.SetNode("n9")
	if c := (func() Change { mustStore(t, tab, "6", "s"); return expect("renamed", OpStore)[0] })(); c.Node != "n9" {
		t.Fatalf("SetNode not used: %+v", c)
	}
	tab.SetOnChange(nil)
	mustStore(t, tab, "7", "s")
	if len(log.take()) != 0 {
		t.Fatal("feed not removed")
	}
}

// The callback runs without shard locks held, so it may use the table.
func TestChangeFeedReentrant(t *testing.T) {
	tab, _ := newTestTable(t, Config{Type: KeyString}, Options{})
	seen := 0
	tab.SetOnChange(func(c Change) {
		if c.Op == OpStore {
			if e, ok := tab.Get(c.Key.String()); ok && e.Server == c.Server {
				seen++
			}
			tab.Range(func(Entry) bool { return true })
		}
	})
	mustStore(t, tab, "a", "s")
	mustStore(t, tab, "b", "s")
	if seen != 2 {
		t.Fatalf("callback saw %d stores", seen)
	}
}
