package sticky

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// drainPollInterval is how often `drain --wait` asks how many users are
// left, and so how often it prints progress.
var drainPollInterval = time.Second

func cmdServers(c *stickyClient, _ []string) error {
	var res serversAnswer
	data, err := c.get(http.MethodGet, "/sticky/servers", nil, &res)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(data)
	}
	if len(res.Servers) == 0 {
		fmt.Fprintln(c.out, "no known servers")
		return nil
	}
	now := time.Now()
	tw := c.table()
	fmt.Fprintln(tw, "SERVER\tSTATE\tSTUCK\tLAST NEW USER\tTABLES\tPOLICIES")
	for _, s := range res.Servers {
		state := "active"
		if s.Drained {
			state = "drained"
		}
		last := "-"
		if s.LastNewUser != nil {
			last = formatAgo(now.Sub(*s.LastNewUser)) + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", s.Server, state, s.Stuck, last, formatPerTable(s.Tables), dash(strings.Join(s.Policies, ", ")))
	}
	return tw.Flush()
}

// formatPerTable renders per-table counts as "sessions=12 ips=3".
func formatPerTable(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + "=" + strconv.Itoa(m[n])
	}
	return strings.Join(parts, " ")
}

// formatAgo renders an age to the second, to the minute past an hour, in
// days past two.
func formatAgo(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	if d >= 48*time.Hour {
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	}
	if d >= time.Hour {
		return d.Round(time.Minute).String()
	}
	return d.Round(time.Second).String()
}

// cmdDrainWait drains a server and, with --wait, waits for its users to
// leave.
func cmdDrainWait(c *stickyClient, args []string) error {
	wait, _ := c.cmd.Flags().GetBool("wait")
	timeout, _ := c.cmd.Flags().GetDuration("timeout")
	if !wait {
		if c.cmd.Flags().Changed("timeout") {
			return errors.New("--timeout only applies with --wait")
		}
		return cmdDrain(c, args, true)
	}
	if timeout < 0 {
		return errors.New("--timeout must not be negative")
	}
	saveJSON := c.json
	c.json = false // progress is for people; --json applies to the final state
	if err := cmdDrain(c, args, true); err != nil {
		return err
	}
	c.json = saveJSON
	return waitDrained(c, args[0], timeout)
}

// waitDrained polls GET /sticky/servers until no entry names server.
func waitDrained(c *stickyClient, server string, timeout time.Duration) error {
	p := newProgress(c.out)
	start := time.Now()
	first := -1
	for {
		s, err := c.serverState(server)
		if err != nil {
			p.done()
			return err
		}
		if !s.Drained {
			p.done()
			return fmt.Errorf("%s is no longer drained (undrained while waiting)", server)
		}
		if first < 0 {
			first = s.Stuck
		}
		elapsed := time.Since(start)
		if s.Stuck == 0 {
			p.line(fmt.Sprintf("%s: no users stuck, safe to stop (%s)", server, formatAgo(elapsed)))
			p.done()
			if c.json {
				return c.printJSONValue(s)
			}
			return nil
		}
		if timeout > 0 && elapsed >= timeout {
			p.line(fmt.Sprintf("%s: %d %s still stuck after %s", server, s.Stuck, plural(s.Stuck, "user", "users"), formatAgo(elapsed)))
			p.done()
			return fmt.Errorf("timed out after %s: %d %s still stuck to %s", timeout, s.Stuck, plural(s.Stuck, "user", "users"), server)
		}
		p.line(fmt.Sprintf("%s: %s%d %s left%s, %s", server, p.bar(s.Stuck, first), s.Stuck,
			plural(s.Stuck, "stuck user", "stuck users"), formatPerTableSuffix(s.Tables), formatAgo(elapsed)))
		next := drainPollInterval
		if timeout > 0 {
			next = min(next, max(timeout-elapsed, time.Millisecond))
		}
		time.Sleep(next)
	}
}

func formatPerTableSuffix(m map[string]int) string {
	if len(m) < 2 {
		return ""
	}
	return " (" + formatPerTable(m) + ")"
}

// serverState returns one server's entry of GET /sticky/servers; a server
// no table or policy knows has no users.
func (c *stickyClient) serverState(server string) (serverInfo, error) {
	var res serversAnswer
	if _, err := c.get(http.MethodGet, "/sticky/servers", nil, &res); err != nil {
		return serverInfo{}, err
	}
	for _, s := range res.Servers {
		if s.Server == server {
			return s, nil
		}
	}
	drained := false
	for _, d := range res.Drained {
		drained = drained || d == server
	}
	return serverInfo{Server: server, Drained: drained, Tables: map[string]int{}}, nil
}

func (c *stickyClient) printJSONValue(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.printJSON(b)
}

// progress prints one status line per poll: rewritten in place on a
// terminal, one line after the other otherwise (logs, pipes, CI).
type progress struct {
	out  io.Writer
	tty  bool
	open bool
}

func newProgress(out io.Writer) *progress {
	return &progress{out: out, tty: isTerminal(out)}
}

func (p *progress) line(s string) {
	if p.tty {
		fmt.Fprintf(p.out, "\r%s\x1b[K", s)
		p.open = true
		return
	}
	fmt.Fprintln(p.out, s)
}

func (p *progress) done() {
	if p.open {
		fmt.Fprintln(p.out)
		p.open = false
	}
}

// bar draws how much of the starting count has left, on a terminal only.
func (p *progress) bar(left, first int) string {
	if !p.tty || first <= 0 {
		return ""
	}
	const width = 20
	gone := width - left*width/first
	return "[" + strings.Repeat("#", gone) + strings.Repeat(".", width-gone) + "] "
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
