package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// TestStatusExample runs examples/status: the status page answers only
// with the example's credentials, shows the servers the load balancer
// uses with the users stuck to them, and its drain button works.
func TestStatusExample(t *testing.T) {
	text, ports := loadExample(t, "../examples/status/Caddyfile", "8080", "8081", "9001", "9002", "9003", "2019")
	loadCaddy(t, adapt(t, text))
	undrainAllAtEnd(t, ports["2019"])
	first := curl(t, ports["8080"], "/", "")
	if !strings.HasSuffix(first.Body, " answered") {
		t.Fatalf("the load balancer answered %q", first.Body)
	}
	// users without cookies come from one address: the table keeps them on
	// one server
	for range 4 {
		if r := curl(t, ports["8080"], "/", ""); r.Body != first.Body {
			t.Fatalf("cookieless user moved from %q to %q", first.Body, r.Body)
		}
	}
	status := fmt.Sprintf("http://localhost:%d/", ports["8081"])
	get := func(user, pass, accept string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", status, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b)
	}
	if res, _ := get("", "", ""); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without credentials: %d, want 401", res.StatusCode)
	}
	if res, _ := get("ops", "wrong", ""); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("with a wrong password: %d, want 401", res.StatusCode)
	}
	res, page := get("ops", "sticky-status-demo", "")
	if res.StatusCode != 200 || !strings.Contains(page, "<title>caddy-sticky status</title>") {
		t.Fatalf("status page: %d\n%s", res.StatusCode, page)
	}
	res, body := get("ops", "sticky-status-demo", "application/json")
	var rep struct {
		Servers []apiServer `json:"servers"`
	}
	if err := json.Unmarshal([]byte(body), &rep); err != nil || res.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("JSON: %v %s", err, body)
	}
	stuck := map[string]int{}
	for _, s := range rep.Servers {
		stuck[s.Server] = s.Stuck
	}
	backend := fmt.Sprintf("127.0.0.1:%d", ports[map[string]string{"web1": "9001", "web2": "9002", "web3": "9003"}[strings.Fields(first.Body)[0]]])
	if len(rep.Servers) != 3 || stuck[backend] != 1 {
		t.Fatalf("servers %v, want the three backends and one user stuck to %s", stuck, backend)
	}
	if rows := serverRows(page, "servers"); rows[backend] != 1 || len(rows) != 3 {
		t.Fatalf("page rows %v", rows)
	}
	// The drain button, as a browser on the page would press it.
	token := regexp.MustCompile(`name="token" value="([0-9a-f]+)"`).FindStringSubmatch(page)
	if token == nil {
		t.Fatal("no drain buttons: the example sets actions")
	}
	form := url.Values{"token": {token[1]}, "server": {backend}, "action": {"drain"}}
	req, _ := http.NewRequest("POST", status, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", strings.TrimSuffix(status, "/"))
	req.SetBasicAuth("ops", "sticky-status-demo")
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	post, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	post.Body.Close()
	if drained := isDrained(t, ports["2019"], backend); post.StatusCode != http.StatusSeeOther || !drained {
		t.Fatalf("drain from the page: %d, drained %v", post.StatusCode, drained)
	}
}
