package integration

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"
)

// TestParallelFirstRequestsOneServer: a browser loads a page and its
// assets in parallel before any response has come back; with a random
// fallback each request would place the new user anew. The reservation
// made when the first request chooses its server sends all 16 to it.
func TestParallelFirstRequestsOneServer(t *testing.T) {
	slow := func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(30 * time.Millisecond) // the response (and the store) come late
		w.Write([]byte(w.Header().Get("X-Backend")))
	}
	bs := []*backend{startBackend(t, "web1", slow), startBackend(t, "web2", slow), startBackend(t, "web3", slow)}
	port := tableSite(t, bs, `		table users {
			type string len 64
		}`, `stick_table users {
			on {header.X-User}
			fallback random
		}`, "")
	const users, parallel = 40, 16
	split := 0
	for u := range users {
		user := fmt.Sprint("browser-", u)
		got := make([]string, parallel)
		var wg sync.WaitGroup
		for i := range parallel {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got[i] = as(t, port, user, "").Body
			}()
		}
		wg.Wait()
		seen := map[string]bool{}
		for _, g := range got {
			seen[g] = true
		}
		if len(seen) != 1 {
			split++
			t.Errorf("%s: %d parallel first requests reached %v", user, parallel, seen)
		}
	}
	if split > 0 {
		t.Fatalf("%d of %d users placed on several servers", split, users)
	}
}
