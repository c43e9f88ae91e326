package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
)

// Every write command takes the flags of addWriteFlags, makes its call with send (or,
// for several calls, dials with writeOptions.connect and fills each request with
// writeOptions.fill), and prints the answer with cli.finishWrite: a new write command is
// its request and a line of text.

// defaultWait is how long a bare --wait waits for the fleet.
const defaultWait = 30 * time.Second

// writeOptions are the flags every write command takes, and the global --expected-revision.
type writeOptions struct {
	c        *cli
	message  string
	wait     time.Duration // 0: answer at once
	dryRun   bool
	out      *outputFormat // text, yaml or json
	expected *optUint
}

// addWriteFlags gives cmd the flags of a write: -m/--message, --wait[=DURATION],
// --dry-run and -o text|yaml|json. A bare --wait takes no value, so `--wait 10s` leaves
// 10s as an argument: when that breaks cmd's argument check, the usage error says to write
// --wait=10s.
func addWriteFlags(c *cli, cmd *cobra.Command) *writeOptions {
	w := &writeOptions{c: c, expected: &c.expected}
	f := cmd.Flags()
	f.StringVarP(&w.message, "message", "m", "", "change `MESSAGE`, kept in the history")
	f.DurationVar(&w.wait, "wait", 0, "wait for every connected proxy to apply the new revision or refuse it, at most `DURATION` (bare --wait: "+defaultWait.String()+"); exit 6 on a refusal, 7 at the deadline")
	f.Lookup("wait").NoOptDefVal = defaultWait.String()
	f.BoolVar(&w.dryRun, "dry-run", false, "check the change on the server and print what it would change; store nothing")
	w.out = addOutputFlag(cmd, "text", "yaml", "json")

	check := cmd.Args
	if check == nil {
		check = cobra.ArbitraryArgs
	}
	cmd.Args = func(cmd *cobra.Command, args []string) error {
		err := check(cmd, args)
		if err == nil || !cmd.Flags().Changed("wait") {
			return err
		}
		for _, a := range args {
			if _, perr := time.ParseDuration(a); perr == nil {
				return usagef("%v: write --wait=%s (a bare --wait waits %s)", err, a, defaultWait)
			}
		}
		return err
	}
	return w
}

// check refuses what the flags cannot mean together.
func (w *writeOptions) check() error {
	switch {
	case w.wait < 0:
		return usagef("--wait: want a positive duration such as 10s")
	case w.wait > 0 && w.dryRun:
		return usagef("--wait and --dry-run exclude each other: a dry run stores nothing to wait for")
	}
	return nil
}

// connect checks the flags and dials the control plane with a call timeout of --timeout
// plus the wait, so the server waits the whole of it.
func (w *writeOptions) connect() (adminv1.AdminServiceClient, context.Context, func(), error) {
	if err := w.check(); err != nil {
		return nil, nil, nil, err
	}
	return w.c.dial(w.c.timeout + w.wait)
}

// fill sets the fields every write request has (message, wait, dry_run and
// expected_revision) from the flags, leaving those whose flag was not given alone.
func (w *writeOptions) fill(req proto.Message) error {
	m := req.ProtoReflect()
	set := func(name string, v protoreflect.Value) error {
		fd := m.Descriptor().Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			return fmt.Errorf("fill %s: it has no field %s", m.Descriptor().FullName(), name)
		}
		m.Set(fd, v)
		return nil
	}
	var errs []error
	if w.message != "" {
		errs = append(errs, set("message", protoreflect.ValueOfString(w.message)))
	}
	if w.wait > 0 {
		errs = append(errs, set("wait", protoreflect.ValueOfString(w.wait.String())))
	}
	if w.dryRun {
		errs = append(errs, set("dry_run", protoreflect.ValueOfBool(true)))
	}
	if v := w.expected.ptr(); v != nil {
		errs = append(errs, set("expected_revision", protoreflect.ValueOfUint64(*v)))
	}
	return errors.Join(errs...)
}

// send makes one write call: it fills req with the write flags, dials with a timeout that
// covers the wait and calls call, a method of the admin client such as
// adminv1.AdminServiceClient.DeleteUpstream.
func send[Req proto.Message, Resp writeResponse](w *writeOptions, call func(adminv1.AdminServiceClient, context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	var zero Resp
	if err := w.fill(req); err != nil {
		return zero, err
	}
	client, ctx, done, err := w.connect()
	if err != nil {
		return zero, err
	}
	defer done()
	return call(client, ctx, req)
}

// writeResponse is what every write answers.
type writeResponse interface {
	proto.Message
	GetRevision() uint64
	GetDryRun() bool
	GetDiff() *adminv1.ConfigDiff
	GetFleet() *adminv1.Rollout
}

// finishWrite prints the answer of a write. With -o yaml|json it prints the response
// itself; otherwise done (what was written, with the revision), or for a dry run what
// would change, and, when the write waited, where the fleet stands. It returns a
// *fleetError when a proxy refused the revision or the wait ended first.
func (c *cli) finishWrite(w *writeOptions, resp writeResponse, done string) error {
	var err error
	switch {
	case w.out.value == "json":
		err = c.printJSON(resp)
	case w.out.value == "yaml":
		err = c.printYAML(resp)
	case resp.GetDryRun():
		fmt.Fprintf(c.stdout, "dry run: the change is valid at revision %d; nothing was stored\n", resp.GetRevision())
		c.printDiff(resp.GetDiff())
	default:
		fmt.Fprintln(c.stdout, done)
		if r := resp.GetFleet(); r != nil {
			c.printRollout(r, w.wait)
		}
	}
	if err != nil {
		return err
	}
	if r := resp.GetFleet(); r != nil && (len(r.GetRefused()) > 0 || r.GetTimedOut()) {
		return &fleetError{rollout: r, wait: w.wait, previous: resp.GetDiff().GetBaseRevision()}
	}
	return nil
}

// fleetError is a write that was stored but that the fleet did not all apply within the
// wait: a proxy refused it (exit code 6) or the wait ended first (7).
type fleetError struct {
	rollout  *adminv1.Rollout
	wait     time.Duration
	previous uint64 // the revision before the write; 0 when unknown
}

func (e *fleetError) Error() string {
	r := e.rollout
	var msg string
	if refused := r.GetRefused(); len(refused) > 0 {
		nodes := make([]string, 0, len(refused))
		for _, p := range refused {
			nodes = append(nodes, p.GetNodeId())
		}
		msg = fmt.Sprintf("revision %d was refused by %s", r.GetRevision(), strings.Join(nodes, ", "))
	} else {
		msg = fmt.Sprintf("revision %d was not applied on %s within %s", r.GetRevision(), strings.Join(r.GetLagging(), ", "), e.wait)
	}
	msg += "; it is stored"
	if e.previous > 0 && e.previous < r.GetRevision() {
		msg += fmt.Sprintf(" (llmproxyctl rollback %d undoes it)", e.previous)
	}
	return msg
}
