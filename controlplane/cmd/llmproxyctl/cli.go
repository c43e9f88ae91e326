package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/llmproxy-go/llmproxy/controlplane/admin"
	"github.com/llmproxy-go/llmproxy/controlplane/configfile"
	"github.com/llmproxy-go/llmproxy/controlplane/tlsconfig"
	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
)

const defaultServer = "127.0.0.1:18000"

// Exit codes; exitCodesHelp documents them.
const (
	exitOK       = 0
	exitError    = 1
	exitUsage    = 2
	exitNotFound = 3
	exitInvalid  = 4
	exitConflict = 5
	exitRefused  = 6
	exitTimeout  = 7
)

// cli holds the global flags and the streams of one run.
type cli struct {
	server   string // "" means env LLMPROXY_SERVER, else defaultServer
	token    string // "" means env LLMPROXY_ADMIN_AUTH_TOKEN
	expected optUint
	timeout  time.Duration
	ca       string // "" and no cert: plaintext
	cert     string
	key      string

	getenv         func(string) string
	stdin          io.Reader
	stdout, stderr io.Writer
}

// usageError is a command-line mistake: exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// exitCode classifies err: see exitCodesHelp.
func exitCode(err error) int {
	var (
		ue usageError
		fe *fleetError
	)
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &fe):
		if len(fe.rollout.GetRefused()) > 0 {
			return exitRefused
		}
		return exitTimeout
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.NotFound:
			return exitNotFound
		case codes.InvalidArgument, codes.OutOfRange, codes.AlreadyExists, codes.FailedPrecondition:
			return exitInvalid
		case codes.Aborted:
			return exitConflict
		default:
			return exitError
		}
	}
	for _, kind := range []error{validate.ErrInvalid, validate.ErrDuplicate, validate.ErrReference, validate.ErrInUse, validate.ErrNotSupported} {
		if errors.Is(err, kind) {
			return exitInvalid
		}
	}
	return exitError
}

// report prints err, if any, on stderr as "llmproxyctl: <message>" lines (one per error of
// a joined error, counted), with the failing command's usage line for a usage error, and
// returns the exit code.
func (c *cli) report(cmd *cobra.Command, err error) int {
	code := exitCode(err)
	if err == nil {
		return code
	}
	lines := messages(err)
	if len(lines) > 1 {
		fmt.Fprintf(c.stderr, "llmproxyctl: %d errors:\n", len(lines))
	}
	for _, l := range lines {
		fmt.Fprintf(c.stderr, "llmproxyctl: %s\n", l)
	}
	var h hinted
	if errors.As(err, &h) {
		fmt.Fprintf(c.stderr, "llmproxyctl: hint: %s\n", h.hint)
	}
	if code == exitUsage && cmd != nil {
		fmt.Fprintf(c.stderr, "usage: %s\n(run '%s --help' for more)\n", cmd.UseLine(), cmd.CommandPath())
	}
	return code
}

// messages returns the text of err for people, one line per error of a joined error; a
// gRPC status gives its message without the "rpc error" prefix.
func messages(err error) []string {
	var h hinted
	if errors.As(err, &h) {
		return messages(h.err)
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []string
		for _, e := range j.Unwrap() {
			out = append(out, messages(e)...)
		}
		return out
	}
	if st, ok := status.FromError(err); ok {
		if st.Code() == codes.Unavailable {
			return []string{"control plane unavailable: " + st.Message()}
		}
		return []string{st.Message()}
	}
	return []string{err.Error()}
}

// hinted is an error with a line of advice, printed after it; it keeps err's exit code.
type hinted struct {
	err  error
	hint string
}

func (h hinted) Error() string { return h.err.Error() + " (hint: " + h.hint + ")" }
func (h hinted) Unwrap() error { return h.err }

// missing returns what a NOT_FOUND status says is missing (its ResourceInfo detail), or
// nil when err is not such a status.
func missing(err error) *errdetails.ResourceInfo {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.NotFound {
		return nil
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.ResourceInfo); ok {
			return ri
		}
	}
	return nil
}

// connect dials the control plane and returns a client, a context carrying the token and
// the call timeout (--timeout), and a cleanup function.
func (c *cli) connect() (adminv1.AdminServiceClient, context.Context, func(), error) {
	return c.dial(c.timeout)
}

// dial is connect with a context that expires after timeout.
func (c *cli) dial(timeout time.Duration) (adminv1.AdminServiceClient, context.Context, func(), error) {
	server := c.server
	if server == "" {
		server = c.getenv("LLMPROXY_SERVER")
	}
	if server == "" {
		server = defaultServer
	}
	token := c.token
	if token == "" {
		token = c.getenv("LLMPROXY_ADMIN_AUTH_TOKEN")
	}
	creds, err := c.credentials()
	if err != nil {
		return nil, nil, nil, err
	}
	conn, err := grpc.NewClient(server,
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(admin.MaxMessageBytes)))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("connect %s: %w", server, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	return adminv1.NewAdminServiceClient(conn), ctx, func() { cancel(); conn.Close() }, nil
}

// credentials returns the connection's security: TLS when --ca or --cert is given (the
// system's CAs when --ca is not), plaintext otherwise. A bad file is a usage error naming it.
func (c *cli) credentials() (credentials.TransportCredentials, error) {
	if c.ca == "" && c.cert == "" && c.key == "" {
		return insecure.NewCredentials(), nil
	}
	if (c.cert == "") != (c.key == "") {
		return nil, usagef("--cert and --key go together: give both or neither")
	}
	tc, _, err := tlsconfig.ClientFiles(c.ca, c.cert, c.key, nil)
	if err != nil {
		return nil, fmt.Errorf("load TLS files: %w", err)
	}
	return credentials.NewTLS(tc), nil
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

func (o *optUint) Type() string { return "uint" }

// ptr returns the value, or nil when the flag was not given.
func (o *optUint) ptr() *uint64 {
	if !o.set {
		return nil
	}
	v := o.v
	return &v
}

// oneLine keeps a message on one table row, shortened.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}
