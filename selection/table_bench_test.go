package selection

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkTableHit measures a stick_table hit (`on {user}`, the key in
// the table, its server available) and reports its allocations.
//
//	go test -run '^$' -bench TableHit -benchmem ./selection/
func BenchmarkTableHit(b *testing.B) {
	p := tablePolicy(b, &StickTable{})
	pool := newPool(10)
	const users = 1024
	reqs := make([]*http.Request, users)
	for i := range reqs {
		user := fmt.Sprint("user-", i)
		if _, err := p.table.Store(user, pool[i%len(pool)].Dial); err != nil {
			b.Fatal(err)
		}
		reqs[i] = placeholderUserRequest(user)
	}
	w := httptest.NewRecorder()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r := reqs[i%users]
		i++
		if p.Select(pool, r, w) == nil {
			b.Fatal("no upstream")
		}
		clear(varsOf(r)) // the request is sent again
	}
}
