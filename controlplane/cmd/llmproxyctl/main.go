// Command llmproxyctl is the operator CLI of the LLMProxy control plane. It speaks the admin
// gRPC API.
//
// Usage:
//
//	llmproxyctl [flags] apply -f FILE [--dry-run]      whole config from YAML (- for stdin)
//	llmproxyctl [flags] get upstreams|groups|forwards [NAME]
//	llmproxyctl [flags] delete upstream|group|forward NAME
//	llmproxyctl [flags] route set FORWARD PATH GROUP   create or repoint one route
//	llmproxyctl [flags] route delete FORWARD PATH
//	llmproxyctl [flags] export                         whole config as YAML (apply accepts it)
//	llmproxyctl validate -f FILE                       local check, no server
//	llmproxyctl [flags] status                         connected proxies
//
// Flags (before or after the command): --server (env LLMPROXY_SERVER, default
// 127.0.0.1:18000), --token (env LLMPROXY_ADMIN_AUTH_TOKEN), --expected-revision,
// --timeout. Errors are printed as "llmproxyctl: <message>" with exit status 1; usage
// errors exit with 2.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/llmproxy-go/llmproxy/controlplane/admin"
	"github.com/llmproxy-go/llmproxy/controlplane/configfile"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

const usage = `usage: llmproxyctl [flags] COMMAND [args]

commands:
  apply -f FILE [--dry-run]            replace the whole config with a YAML file (- for stdin)
  get upstreams|groups|forwards [NAME] print resources as YAML
  delete upstream|group|forward NAME   delete one resource
  route set FORWARD PATH GROUP         create a route, or point an existing one at GROUP
  route delete FORWARD PATH            delete a route
  export                               print the whole config as YAML (apply takes it back)
  validate -f FILE                     check a YAML file locally, without a server
  status                               list the proxies of the fleet

flags (before or after the command):
`

// usageError is a command-line mistake: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// optUint is a uint64 flag that remembers whether it was set.
type optUint struct {
	set bool
	v   uint64
}

func (o *optUint) String() string {
	if o == nil || !o.set {
		return ""
	}
	return strconv.FormatUint(o.v, 10)
}

func (o *optUint) Set(s string) error {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return errors.New("want a revision number")
	}
	o.set, o.v = true, v
	return nil
}

func (o *optUint) ptr() *uint64 {
	if !o.set {
		return nil
	}
	v := o.v
	return &v
}

// cli holds the global flags and the streams of one run.
type cli struct {
	server   string
	token    string
	expected optUint
	timeout  time.Duration

	stdin          io.Reader
	stdout, stderr io.Writer
}

func (c *cli) globalFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.server, "server", c.server, "control plane gRPC address (env LLMPROXY_SERVER)")
	fs.StringVar(&c.token, "token", c.token, "admin bearer token (env LLMPROXY_ADMIN_AUTH_TOKEN)")
	fs.Var(&c.expected, "expected-revision", "fail unless the current revision is this one")
	fs.DurationVar(&c.timeout, "timeout", c.timeout, "timeout of each call")
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is the whole program; it returns the exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	c := &cli{
		server:  envOr("LLMPROXY_SERVER", "127.0.0.1:18000"),
		token:   os.Getenv("LLMPROXY_ADMIN_AUTH_TOKEN"),
		timeout: 30 * time.Second,
		stdin:   stdin, stdout: stdout, stderr: stderr,
	}
	err := c.dispatch(args)
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "llmproxyctl: %s\n(run llmproxyctl -h for usage)\n", ue.msg)
		return 2
	default:
		fmt.Fprintf(stderr, "llmproxyctl: %s\n", message(err))
		return 1
	}
}

// message is the text of err for people: a gRPC status's message without the "rpc error"
// prefix.
func message(err error) string {
	if st, ok := status.FromError(err); ok {
		if st.Code() == codes.Unavailable {
			return "control plane unavailable: " + st.Message()
		}
		return st.Message()
	}
	return err.Error()
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// parse parses args with fs, allowing flags after positional arguments, and returns the
// positional ones.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func (c *cli) newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	c.globalFlags(fs)
	return fs
}

func (c *cli) dispatch(args []string) error {
	top := flag.NewFlagSet("llmproxyctl", flag.ContinueOnError)
	top.SetOutput(c.stderr)
	c.globalFlags(top)
	top.Usage = func() {
		fmt.Fprint(c.stderr, usage)
		top.PrintDefaults()
	}
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	rest := top.Args()
	if len(rest) == 0 {
		top.Usage()
		return usagef("missing command")
	}
	cmd, rest := rest[0], rest[1:]
	switch cmd {
	case "apply":
		return c.apply(rest)
	case "get":
		return c.get(rest)
	case "delete":
		return c.delete(rest)
	case "route":
		return c.route(rest)
	case "export":
		return c.export(rest)
	case "validate":
		return c.validate(rest)
	case "status":
		return c.status(rest)
	case "help":
		top.Usage()
		return nil
	default:
		return usagef("unknown command %q", cmd)
	}
}

// connect dials the control plane and returns a client, a context carrying the token and
// the call timeout, and a cleanup function.
func (c *cli) connect() (adminv1.AdminServiceClient, context.Context, func(), error) {
	conn, err := grpc.NewClient(c.server,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(admin.MaxMessageBytes)))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("connect %s: %w", c.server, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	if c.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token)
	}
	return adminv1.NewAdminServiceClient(conn), ctx, func() { cancel(); conn.Close() }, nil
}

// readFile reads and parses the config file at path, or stdin for "-" (named "<stdin>" in
// messages, with lines and columns like a file).
func (c *cli) readFile(path string) (*configfile.File, error) {
	var name string
	var data []byte
	var err error
	if path == "-" {
		name = "<stdin>"
		data, err = io.ReadAll(c.stdin)
	} else {
		name = path
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return configfile.Parse(name, data)
}

func (c *cli) apply(args []string) error {
	fs := c.newFlagSet("apply")
	file := fs.String("f", "", "YAML config file, - for stdin")
	dryRun := fs.Bool("dry-run", false, "validate on the server without storing")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if *file == "" || len(pos) > 0 {
		return usagef("usage: llmproxyctl apply -f FILE [--dry-run]")
	}
	f, err := c.readFile(*file)
	if err != nil {
		return joinLines(err)
	}
	client, ctx, done, err := c.connect()
	if err != nil {
		return err
	}
	defer done()
	resp, err := client.ApplyConfig(ctx, &adminv1.ApplyConfigRequest{
		Config:           f.Config(),
		DryRun:           *dryRun,
		ExpectedRevision: c.expected.ptr(),
	})
	if err != nil {
		return err
	}
	if resp.GetDryRun() {
		fmt.Fprintf(c.stdout, "dry run: config is valid (current revision %d)\n", resp.GetRevision())
		return nil
	}
	fmt.Fprintf(c.stdout, "revision %d\n", resp.GetRevision())
	return nil
}

func (c *cli) get(args []string) error {
	fs := c.newFlagSet("get")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 1 || len(pos) > 2 {
		return usagef("usage: llmproxyctl get upstreams|groups|forwards [NAME]")
	}
	kind := pos[0]
	name := ""
	if len(pos) == 2 {
		name = pos[1]
	}
	client, ctx, done, err := c.connect()
	if err != nil {
		return err
	}
	defer done()
	out := &configv1.Config{}
	switch kind {
	case "upstreams", "upstream":
		if name != "" {
			u, err := client.GetUpstream(ctx, &adminv1.GetUpstreamRequest{Name: name})
			if err != nil {
				return err
			}
			out.Upstreams = []*configv1.Upstream{u}
		} else {
			resp, err := client.ListUpstreams(ctx, &adminv1.ListUpstreamsRequest{})
			if err != nil {
				return err
			}
			out.Upstreams = resp.GetUpstreams()
		}
	case "groups", "group", "upstream-groups", "upstream_groups":
		if name != "" {
			g, err := client.GetUpstreamGroup(ctx, &adminv1.GetUpstreamGroupRequest{Name: name})
			if err != nil {
				return err
			}
			out.UpstreamGroups = []*configv1.UpstreamGroup{g}
		} else {
			resp, err := client.ListUpstreamGroups(ctx, &adminv1.ListUpstreamGroupsRequest{})
			if err != nil {
				return err
			}
			out.UpstreamGroups = resp.GetUpstreamGroups()
		}
	case "forwards", "forward":
		if name != "" {
			f, err := client.GetForward(ctx, &adminv1.GetForwardRequest{Name: name})
			if err != nil {
				return err
			}
			out.HttpServer = &configv1.HttpServer{Forwards: []*configv1.Forward{f}}
		} else {
			resp, err := client.ListForwards(ctx, &adminv1.ListForwardsRequest{})
			if err != nil {
				return err
			}
			out.HttpServer = &configv1.HttpServer{Forwards: resp.GetForwards()}
		}
	default:
		return usagef("get: unknown kind %q (want upstreams, groups or forwards)", kind)
	}
	return c.printYAML(out)
}

func (c *cli) printYAML(cfg *configv1.Config) error {
	b, err := configfile.Encode(cfg)
	if err != nil {
		return err
	}
	_, err = c.stdout.Write(b)
	return err
}

func (c *cli) delete(args []string) error {
	fs := c.newFlagSet("delete")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("usage: llmproxyctl delete upstream|group|forward NAME")
	}
	kind, name := pos[0], pos[1]
	client, ctx, done, err := c.connect()
	if err != nil {
		return err
	}
	defer done()
	var resp *adminv1.DeleteResponse
	switch kind {
	case "upstream", "upstreams":
		kind = "upstream"
		resp, err = client.DeleteUpstream(ctx, &adminv1.DeleteUpstreamRequest{Name: name, ExpectedRevision: c.expected.ptr()})
	case "group", "groups", "upstream-group", "upstream_group":
		kind = "upstream group"
		resp, err = client.DeleteUpstreamGroup(ctx, &adminv1.DeleteUpstreamGroupRequest{Name: name, ExpectedRevision: c.expected.ptr()})
	case "forward", "forwards":
		kind = "forward"
		resp, err = client.DeleteForward(ctx, &adminv1.DeleteForwardRequest{Name: name, ExpectedRevision: c.expected.ptr()})
	default:
		return usagef("delete: unknown kind %q (want upstream, group or forward)", kind)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "%s %q deleted (revision %d)\n", kind, name, resp.GetRevision())
	return nil
}

func (c *cli) route(args []string) error {
	fs := c.newFlagSet("route")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("usage: llmproxyctl route set FORWARD PATH GROUP | route delete FORWARD PATH")
	}
	switch pos[0] {
	case "set":
		if len(pos) != 4 {
			return usagef("usage: llmproxyctl route set FORWARD PATH GROUP")
		}
		return c.routeSet(pos[1], pos[2], pos[3])
	case "delete":
		if len(pos) != 3 {
			return usagef("usage: llmproxyctl route delete FORWARD PATH")
		}
		client, ctx, done, err := c.connect()
		if err != nil {
			return err
		}
		defer done()
		resp, err := client.DeleteRoute(ctx, &adminv1.DeleteRouteRequest{
			Name: pos[1], Id: admin.RouteID(pos[2]), ExpectedRevision: c.expected.ptr(),
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "route %q of forward %q deleted (revision %d)\n", pos[2], pos[1], resp.GetRevision())
		return nil
	default:
		return usagef("route: unknown action %q (want set or delete)", pos[0])
	}
}

// routeSet points the route PATH of FORWARD at GROUP, keeping its other conditions, or
// appends it when there is none. Without --expected-revision it reads the route and writes
// it at the revision it read, retrying when another write got in between.
func (c *cli) routeSet(forward, path, group string) error {
	client, ctx, done, err := c.connect()
	if err != nil {
		return err
	}
	defer done()
	id := admin.RouteID(path)
	for attempt := 0; ; attempt++ {
		var hdr metadata.MD
		entry, err := client.GetRoute(ctx, &adminv1.GetRouteRequest{Name: forward, Id: id}, grpc.Header(&hdr))
		expected := c.expected.ptr()
		if expected == nil {
			if vals := hdr.Get(admin.RevisionHeader); len(vals) > 0 {
				if v, perr := strconv.ParseUint(vals[0], 10, 64); perr == nil {
					expected = &v
				}
			}
		}
		var rev uint64
		verb := "updated"
		switch {
		case status.Code(err) == codes.NotFound && strings.HasPrefix(status.Convert(err).Message(), "route "):
			verb = "created"
			var resp *adminv1.RouteResponse
			resp, err = client.CreateRoute(ctx, &adminv1.CreateRouteRequest{
				Name:             forward,
				Route:            &configv1.Route{Path: path, TargetGroup: group},
				ExpectedRevision: expected,
			})
			rev = resp.GetRevision()
		case err != nil:
			return err
		default:
			r := entry.GetRoute()
			r.TargetGroup = group
			var resp *adminv1.RouteResponse
			resp, err = client.UpdateRoute(ctx, &adminv1.UpdateRouteRequest{
				Name: forward, Id: id, Route: r, ExpectedRevision: expected,
			})
			rev = resp.GetRevision()
		}
		if status.Code(err) == codes.Aborted && !c.expected.set && attempt < 4 {
			continue
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "route %q of forward %q %s: target_group %q (revision %d)\n", path, forward, verb, group, rev)
		return nil
	}
}

func (c *cli) export(args []string) error {
	fs := c.newFlagSet("export")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("usage: llmproxyctl export")
	}
	client, ctx, done, err := c.connect()
	if err != nil {
		return err
	}
	defer done()
	resp, err := client.GetConfig(ctx, &adminv1.GetConfigRequest{})
	if err != nil {
		return err
	}
	return c.printYAML(resp.GetConfig())
}

func (c *cli) validate(args []string) error {
	fs := c.newFlagSet("validate")
	file := fs.String("f", "", "YAML config file, - for stdin")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if *file == "" || len(pos) > 0 {
		return usagef("usage: llmproxyctl validate -f FILE")
	}
	f, err := c.readFile(*file)
	if err == nil {
		_, err = f.Validate()
	}
	if err != nil {
		return joinLines(err)
	}
	fmt.Fprintf(c.stdout, "%s: valid\n", *file)
	return nil
}

// joinLines formats an errors.Join tree one error per line, each prefixed like the first
// by run ("llmproxyctl: "), and counts them.
func joinLines(err error) error {
	var lines []string
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, inner := range j.Unwrap() {
				walk(inner)
			}
			return
		}
		lines = append(lines, e.Error())
	}
	walk(err)
	if len(lines) <= 1 {
		return err
	}
	return fmt.Errorf("%d errors:\nllmproxyctl: %s", len(lines), strings.Join(lines, "\nllmproxyctl: "))
}

func (c *cli) status(args []string) error {
	fs := c.newFlagSet("status")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("usage: llmproxyctl status")
	}
	client, ctx, done, err := c.connect()
	if err != nil {
		return err
	}
	defer done()
	resp, err := client.ListProxies(ctx, &adminv1.ListProxiesRequest{})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "control plane revision %d, %d proxies\n", resp.GetRevision(), len(resp.GetProxies()))
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tCONNECTED\tSINCE\tACKED\tLAST NACK\tADDRESS")
	for _, p := range resp.GetProxies() {
		since := "-"
		if ts := p.GetConnectedSince(); ts != nil {
			since = ts.AsTime().Local().Format(time.RFC3339)
		}
		nack := "-"
		if p.GetLastNackRevision() != 0 || p.GetLastNackError() != "" {
			nack = fmt.Sprintf("%d: %s", p.GetLastNackRevision(), oneLine(p.GetLastNackError()))
		}
		addr := p.GetAddress()
		if addr == "" {
			addr = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", p.GetNodeId(), yesNo(p.GetConnected()), since, p.GetAckedRevision(), nack, addr)
	}
	return tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// oneLine keeps a NACK message on one table row, shortened.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}
