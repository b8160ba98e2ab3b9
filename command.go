package sticky

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-sticky/sticky/selection"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "sticky",
		Usage: "<tables|show|set|delete|clear|drain|undrain|servers|cookie|peers> [args] [--address <interface>] [--config <path> [--adapter <name>]] [--json]",
		Short: "Inspects and changes sticky sessions of a running Caddy",
		Long: `
Talks to the sticky endpoints of a running Caddy's admin API (/sticky/):
lists stick tables and their entries, pins, forgets and clears entries,
drains servers, and shows which cookie value routes to a server.

  caddy sticky tables
  caddy sticky show <table> [--key K] [--server S] [--limit N] [--after K] [--all]
  caddy sticky set <table> <key> <server>
  caddy sticky delete <table> <key>
  caddy sticky clear <table> [--server S]
  caddy sticky drain <address> [--wait [--timeout D]]
  caddy sticky undrain <address>
  caddy sticky servers
  caddy sticky cookie <server> [--policy NAME]
  caddy sticky peers

Like 'caddy stop' and 'caddy reload', it finds the admin endpoint from the
--address flag, else from the config given with --config (and --adapter),
else at the default address. Output is a table; --json prints the API's
JSON instead.
`,
		CobraFunc: setupStickyCommand,
	})
}

// setupStickyCommand adds the flags and subcommands of `caddy sticky` to
// cmd. Tests call it on a fresh command to run the CLI in process.
func setupStickyCommand(cmd *cobra.Command) {
	pf := cmd.PersistentFlags()
	pf.StringP("config", "c", "", "Configuration file to read the admin address from, if --address is not used")
	pf.StringP("adapter", "a", "", "Name of config adapter to apply (when --config is used)")
	pf.String("address", "", "The address of the admin API endpoint, if not the default")
	pf.Bool("json", false, "Print the API's JSON response instead of a table")

	tables := &cobra.Command{
		Use:   "tables",
		Short: "Lists the stick tables with their settings and counters",
		Args:  cobra.NoArgs,
		RunE:  runWith(cmdTables),
	}

	show := &cobra.Command{
		Use:   "show <table> [--key K] [--server S] [--limit N] [--after K] [--all]",
		Short: "Lists a table's entries, in key order, a page at a time",
		Args:  cobra.ExactArgs(1),
		RunE:  runWith(cmdShow),
	}
	show.Flags().String("key", "", "Show only this key")
	show.Flags().String("server", "", "Show only entries stuck to this server")
	show.Flags().Int("limit", 0, fmt.Sprintf("Entries per page (1 to %d; default %d)", maxLimit, defaultLimit))
	show.Flags().String("after", "", "Start after this key (the 'next' of the previous page)")
	show.Flags().Bool("all", false, "Follow pages until the end of the table")

	set := &cobra.Command{
		Use:   "set <table> <key> <server>",
		Short: "Pins a key to a server",
		Args:  cobra.ExactArgs(3),
		RunE:  runWith(cmdSet),
	}

	del := &cobra.Command{
		Use:   "delete <table> <key>",
		Short: "Forgets one key",
		Args:  cobra.ExactArgs(2),
		RunE:  runWith(cmdDelete),
	}

	clearCmd := &cobra.Command{
		Use:   "clear <table> [--server S]",
		Short: "Removes every entry of a table, or only those of one server",
		Args:  cobra.ExactArgs(1),
		RunE:  runWith(cmdClear),
	}
	clearCmd.Flags().String("server", "", "Remove only the entries stuck to this server")

	drainCmd := &cobra.Command{
		Use:   "drain <address> [--wait [--timeout D]]",
		Short: "Sends no new users to a server; users stuck to it stay",
		Long: `Sends no new users to a server; users stuck to it stay.

With --wait it then reports, once a second, how many users are still stuck
to the server, and exits 0 once no table entry names it (non-zero if
--timeout passes first): the "drain, wait, stop" step of a rolling deploy.`,
		Args: cobra.ExactArgs(1),
		RunE: runWith(cmdDrainWait), // command_servers.go
	}
	drainCmd.Flags().Bool("wait", false, "Wait until no table entry names the server")
	drainCmd.Flags().Duration("timeout", 0, "With --wait: give up (and fail) after this long; 0 waits as long as it takes")

	undrain := &cobra.Command{
		Use:   "undrain <address>",
		Short: "Lets a drained server take new users again",
		Args:  cobra.ExactArgs(1),
		RunE:  runWith(func(c *stickyClient, args []string) error { return cmdDrain(c, args, false) }),
	}

	servers := &cobra.Command{
		Use:   "servers",
		Short: "Lists every known server: users stuck to it, drained, last new user",
		Args:  cobra.NoArgs,
		RunE:  runWith(cmdServers),
	}

	cookie := &cobra.Command{
		Use:   "cookie <server> [--policy NAME]",
		Short: "Shows the cookie value that routes to a server",
		Args:  cobra.ExactArgs(1),
		RunE:  runWith(cmdCookie),
	}
	cookie.Flags().String("policy", "", "Only the sticky_cookie policy whose cookie has this name")

	peers := &cobra.Command{
		Use:   "peers",
		Short: "Shows the replication peers",
		Args:  cobra.NoArgs,
		RunE:  runWith(cmdPeers),
	}

	cmd.AddCommand(tables, show, set, del, clearCmd, drainCmd, undrain, servers, cookie, peers)
}

// stickyClient is one CLI invocation: where the admin API is, where output
// goes and in which form.
type stickyClient struct {
	cmd    *cobra.Command
	addr   string
	json   bool
	out    io.Writer
	errOut io.Writer
}

// runWith resolves the admin address from the flags before running fn, so
// every subcommand finds Caddy the way `caddy stop` does.
func runWith(fn func(*stickyClient, []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		fl := cmd.Flags()
		address, _ := fl.GetString("address")
		config, _ := fl.GetString("config")
		adapter, _ := fl.GetString("adapter")
		asJSON, _ := fl.GetBool("json")
		addr, err := caddycmd.DetermineAdminAPIAddress(address, nil, config, adapter)
		if err != nil {
			return fmt.Errorf("finding the admin API address: %v", err)
		}
		c := &stickyClient{cmd: cmd, addr: addr, json: asJSON, out: cmd.OutOrStdout(), errOut: cmd.ErrOrStderr()}
		return fn(c, args)
	}
}

// apiErrorText matches the error AdminAPIRequest returns for an error
// status, whose body is the admin API's {"error": "..."}.
var apiErrorText = regexp.MustCompile(`(?s)HTTP (\d{3}): (\{.*\})\s*$`)

// call sends one request and returns the response body. It decodes the
// admin API's JSON error into a one-line message, since the raw body is
// noise on a terminal.
func (c *stickyClient) call(method, uri string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	resp, err := caddycmd.AdminAPIRequest(c.addr, method, uri, nil, rd)
	if err != nil {
		if m := apiErrorText.FindStringSubmatch(err.Error()); m != nil {
			var e struct {
				Error string `json:"error"`
			}
			if json.Unmarshal([]byte(m[2]), &e) == nil && e.Error != "" {
				return nil, fmt.Errorf("HTTP %s: %s", m[1], e.Error)
			}
			return nil, err
		}
		return nil, fmt.Errorf("reaching Caddy's admin API at %s: %v", c.addr, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the response: %v", err)
	}
	return data, nil
}

// get calls the API and decodes its answer into v.
func (c *stickyClient) get(method, uri string, body, v any) ([]byte, error) {
	data, err := c.call(method, uri, body)
	if err != nil {
		return nil, err
	}
	if v != nil {
		if err := json.Unmarshal(data, v); err != nil {
			return nil, fmt.Errorf("unexpected response from %s: %v", uri, err)
		}
	}
	return data, nil
}

// printJSON prints an API answer indented, for --json.
func (c *stickyClient) printJSON(data []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(data), "", "  "); err != nil {
		return fmt.Errorf("unexpected response: %v", err)
	}
	buf.WriteByte('\n')
	_, err := c.out.Write(buf.Bytes())
	return err
}

func (c *stickyClient) table() *tabwriter.Writer {
	return tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
}

// pathSegment escapes one path segment. A key of "." or ".." must be
// escaped further, or the admin server's path cleaning would treat it as a
// directory step and redirect the request elsewhere.
func pathSegment(s string) string {
	e := url.PathEscape(s)
	if strings.Trim(e, ".") == "" {
		e = strings.ReplaceAll(e, ".", "%2E")
	}
	return e
}

func nonEmpty(what, v string) error {
	if v == "" {
		return fmt.Errorf("%s must not be empty", what)
	}
	return nil
}

func cmdTables(c *stickyClient, _ []string) error {
	var tables []tableInfo
	data, err := c.get(http.MethodGet, "/sticky/tables", nil, &tables)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(data)
	}
	if len(tables) == 0 {
		fmt.Fprintln(c.out, "no stick tables")
		return nil
	}
	tw := c.table()
	fmt.Fprintln(tw, "NAME\tTYPE\tSIZE\tUSED\tEXPIRE\tPEERS\tHITS\tMISSES\tSTORES\tEVICTIONS")
	for _, t := range tables {
		typ := t.Type
		if t.Len > 0 {
			typ += " len " + strconv.Itoa(t.Len)
		}
		size := strconv.Itoa(t.Size)
		if t.NoPurge {
			size += " nopurge"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%d\t%d\t%d\t%d\n",
			t.Name, typ, size, t.Used, t.Expire, dash(t.Peers),
			t.Stats.Hits, t.Stats.Misses, t.Stats.Stores, t.Stats.Evictions)
	}
	return tw.Flush()
}

func cmdShow(c *stickyClient, args []string) error {
	table := args[0]
	if err := nonEmpty("table name", table); err != nil {
		return err
	}
	fl := c.cmd.Flags()
	q := url.Values{}
	for _, name := range []string{"key", "server", "after"} {
		if v, _ := fl.GetString(name); v != "" {
			q.Set(name, v)
		}
	}
	if limit, _ := fl.GetInt("limit"); limit != 0 {
		if limit < 0 || limit > maxLimit {
			return fmt.Errorf("--limit must be from 1 to %d", maxLimit)
		}
		q.Set("limit", strconv.Itoa(limit))
	}
	all, _ := fl.GetBool("all")

	var (
		page     entryPage
		entries  []entryInfo
		lastData []byte
	)
	for {
		uri := "/sticky/tables/" + pathSegment(table)
		if len(q) > 0 {
			uri += "?" + q.Encode()
		}
		page = entryPage{}
		data, err := c.get(http.MethodGet, uri, nil, &page)
		if err != nil {
			return err
		}
		lastData = data
		entries = append(entries, page.Entries...)
		if !all || !page.More || page.Next == "" {
			break
		}
		q.Set("after", page.Next)
	}

	if c.json {
		if !all {
			return c.printJSON(lastData)
		}
		merged, err := json.Marshal(entryPage{Entries: entries, More: page.More, Next: page.Next})
		if err != nil {
			return err
		}
		return c.printJSON(merged)
	}
	if len(entries) == 0 {
		fmt.Fprintln(c.out, "no entries")
	} else {
		tw := c.table()
		fmt.Fprintln(tw, "KEY\tSERVER\tEXPIRES IN\tUPDATED BY\tUPDATED AT")
		for _, e := range entries {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Key, e.Server, formatMillis(e.ExpiresIn), dash(e.UpdatedBy), dash(e.UpdatedAt))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if page.More && page.Next != "" {
		// On stderr, so the table on stdout stays clean for pipes.
		fmt.Fprintf(c.errOut, "more entries follow: caddy sticky show %s --after %s (or --all)\n", shellQuote(table), shellQuote(page.Next))
	}
	return nil
}

func cmdSet(c *stickyClient, args []string) error {
	table, key, server := args[0], args[1], args[2]
	for _, a := range [][2]string{{"table name", table}, {"key", key}, {"server", server}} {
		if err := nonEmpty(a[0], a[1]); err != nil {
			return err
		}
	}
	var e entryInfo
	uri := "/sticky/tables/" + pathSegment(table) + "/entries/" + pathSegment(key)
	data, err := c.get(http.MethodPut, uri, map[string]string{"server": server}, &e)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(data)
	}
	fmt.Fprintf(c.out, "%s: %s -> %s (expires in %s)\n", table, e.Key, e.Server, formatMillis(e.ExpiresIn))
	return nil
}

func cmdDelete(c *stickyClient, args []string) error {
	table, key := args[0], args[1]
	if err := errors.Join(nonEmpty("table name", table), nonEmpty("key", key)); err != nil {
		return err
	}
	var res struct {
		Deleted bool `json:"deleted"`
	}
	uri := "/sticky/tables/" + pathSegment(table) + "/entries/" + pathSegment(key)
	data, err := c.get(http.MethodDelete, uri, nil, &res)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(data)
	}
	if res.Deleted {
		fmt.Fprintf(c.out, "%s: deleted %s\n", table, key)
	} else {
		fmt.Fprintf(c.out, "%s: %s was not in the table\n", table, key)
	}
	return nil
}

func cmdClear(c *stickyClient, args []string) error {
	table := args[0]
	if err := nonEmpty("table name", table); err != nil {
		return err
	}
	uri := "/sticky/tables/" + pathSegment(table)
	server, _ := c.cmd.Flags().GetString("server")
	if c.cmd.Flags().Changed("server") {
		// An explicitly empty --server is a script bug; clearing the
		// whole table instead would be the worst way to find it.
		if server == "" {
			return errors.New("--server must not be empty; leave it out to clear the whole table")
		}
		uri += "?" + url.Values{"server": {server}}.Encode()
	}
	var res struct {
		Cleared int `json:"cleared"`
	}
	data, err := c.get(http.MethodDelete, uri, nil, &res)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(data)
	}
	if server != "" {
		fmt.Fprintf(c.out, "%s: cleared %d %s of %s\n", table, res.Cleared, plural(res.Cleared, "entry", "entries"), server)
	} else {
		fmt.Fprintf(c.out, "%s: cleared %d %s\n", table, res.Cleared, plural(res.Cleared, "entry", "entries"))
	}
	return nil
}

func cmdDrain(c *stickyClient, args []string, drained bool) error {
	addr := args[0]
	if err := nonEmpty("address", addr); err != nil {
		return err
	}
	method := http.MethodPost
	if !drained {
		method = http.MethodDelete
	}
	var res drainState
	data, err := c.get(method, "/sticky/servers/"+pathSegment(addr)+"/drain", nil, &res)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(data)
	}
	changed := res.Changed == nil || *res.Changed
	switch {
	case drained && changed:
		fmt.Fprintf(c.out, "drained %s: no new users go there, stuck users stay\n", addr)
	case drained:
		fmt.Fprintf(c.out, "%s was already drained\n", addr)
	case changed:
		fmt.Fprintf(c.out, "undrained %s: it takes new users again\n", addr)
	default:
		fmt.Fprintf(c.out, "%s was not drained\n", addr)
	}
	return nil
}

func cmdCookie(c *stickyClient, args []string) error {
	server := args[0]
	if err := nonEmpty("server", server); err != nil {
		return err
	}
	q := url.Values{"server": {server}}
	if policy, _ := c.cmd.Flags().GetString("policy"); policy != "" {
		q.Set("policy", policy)
	}
	var routes []selection.CookieRoute
	data, err := c.get(http.MethodGet, "/sticky/cookie?"+q.Encode(), nil, &routes)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(data)
	}
	tw := c.table()
	fmt.Fprintln(tw, "COOKIE\tVALUE\tMODE\tHEADER")
	for _, r := range routes {
		fmt.Fprintf(tw, "%s\t%s\t%s\tCookie: %s=%s\n", r.Cookie, r.Value, r.Mode, r.Cookie, r.Value)
	}
	return tw.Flush()
}

func cmdPeers(c *stickyClient, _ []string) error {
	var peers []json.RawMessage
	data, err := c.get(http.MethodGet, "/sticky/peers", nil, &peers)
	if err != nil {
		return err
	}
	if !c.json && len(peers) == 0 {
		fmt.Fprintln(c.out, "no peers")
		return nil
	}
	// The peer status format belongs to the replication layer; show it
	// as the API gives it rather than guess at columns.
	return c.printJSON(data)
}

// formatMillis renders a remaining lifetime in milliseconds the way Go
// durations read, to the second once it is that long.
func formatMillis(ms int64) string {
	d := time.Duration(ms) * time.Millisecond
	if d >= time.Second {
		d = d.Round(time.Second)
	}
	return d.String()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// shellQuote quotes s for the hint a user copies back into a shell.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r == '-' || r == '.' || r == ':' || r == '/' || r == '_' || r == '@' ||
			('0' <= r && r <= '9') || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z'))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
