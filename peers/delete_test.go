package peers

import (
	"testing"
	"time"

	"github.com/caddy-sticky/sticky/sticktable"
)

// TestDeleteOfRemotelyLearnedKeyReplicates deletes, on one node, a key
// learned from another, in tables with a very long expire: the tombstone's
// retention (twice the expire) once exceeded the TTL receivers accept, and
// the whole batch carrying the delete was refused.
func TestDeleteOfRemotelyLearnedKeyReplicates(t *testing.T) {
	a := startNode(t, "a", nil, testOpts(), testSecret)
	b := startNode(t, "b", []string{a.Addr()}, testOpts(), testSecret)
	mk := func() *sticktable.Table {
		tt, err := sticktable.New(sticktable.Config{Type: sticktable.KeyString, Len: 1024, Size: 1 << 16, Expire: 100 * 365 * 24 * time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(tt.Close)
		return tt
	}
	ta, tb := mk(), mk()
	a.Attach("s", ta)
	b.Attach("s", tb)
	waitFor(t, 20*time.Second, "membership", func() bool { return a.ml.NumMembers() == 2 && b.ml.NumMembers() == 2 })
	ta.Store("k", "srv")
	waitFor(t, 10*time.Second, "store replicates", func() bool { return serverOf(tb, "k") == "srv" })
	if ok, err := tb.Delete("k"); !ok || err != nil {
		t.Fatalf("delete on b: %v %v", ok, err)
	}
	waitFor(t, 10*time.Second, "delete made on b replicates to a", func() bool { return serverOf(ta, "k") == "" })
}
