package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// exitCodesHelp is the exit-status table of every command (README.md repeats it).
const exitCodesHelp = `Exit codes:
  0  success
  1  error: the control plane is unreachable, refused the token or failed; a file is unreadable
  2  usage: unknown command or flag, wrong arguments
  3  not found: the named resource does not exist
  4  invalid: the config or the change was refused (a bad value, a duplicate name, a
     reference to nothing, a deletion of something still in use); every fault is listed
  5  conflict: --expected-revision is not the current revision; read again and retry
  6  refused: with --wait, a proxy refused (NACKed) the new revision; it is stored, and
     served by the proxies that applied it: fix the cause, or roll back
  7  timeout: with --wait, the wait ended before every proxy had applied the new revision
     (it is stored); when a proxy also refused it, the code is 6`

// newRootCommand builds the command tree. Every command is one constructor in a file of
// its own; adding one is a new file and a line here.
func newRootCommand(c *cli, getenv func(string) string) *cobra.Command {
	c.getenv = getenv
	root := &cobra.Command{
		Use:   "llmproxyctl COMMAND",
		Short: "Operate an LLMProxy control plane",
		Long: `llmproxyctl reads and changes the configuration an LLMProxy control plane holds, over its
admin gRPC API, shows the fleet of proxies, and checks configuration files locally.

Flags may come before or after the command.

` + exitCodesHelp,
		SilenceErrors:              true,
		SilenceUsage:               true,
		SuggestionsMinimumDistance: 2,
		Args:                       cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("missing command")
			}
			msg := fmt.Sprintf("unknown command %q", args[0])
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += fmt.Sprintf(" (did you mean %s?)", strings.Join(s, " or "))
			}
			return usageError{msg}
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&c.server, "server", "", "control plane gRPC `address` (default: env LLMPROXY_SERVER, else "+defaultServer+")")
	pf.StringVar(&c.token, "token", "", "admin bearer `token` (default: env LLMPROXY_ADMIN_AUTH_TOKEN)")
	pf.Var(&c.expected, "expected-revision", "write only if the current revision is `N` (else exit code 5)")
	pf.DurationVar(&c.timeout, "timeout", 30*time.Second, "timeout of each call (a write's --wait comes on top)")
	pf.StringVar(&c.ca, "ca", "", "use TLS, trusting the CA certificates (PEM) in `FILE` for the control plane's certificate")
	pf.StringVar(&c.cert, "cert", "", "use TLS and present the client certificate (PEM) in `FILE` (with --key)")
	pf.StringVar(&c.key, "key", "", "private key (PEM) of --cert in `FILE`")
	root.SetIn(c.stdin)
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err.Error()} })

	root.AddCommand(
		newApplyCommand(c),
		newGetCommand(c),
		newDeleteCommand(c),
		newRouteCommand(c),
		newExportCommand(c),
		newValidateCommand(c),
		newStatusCommand(c),
		newTopCommand(c),
		newHealthCommand(c),
		newUsageCommand(c),
		newHistoryCommand(c),
		newDiffCommand(c),
		newRollbackCommand(c),
		newConsumerCommand(c),
		newKeyCommand(c),
		newCacheCommand(c),
	)
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	usageArgs(root)
	return root
}

// usageArgs makes every argument check of the tree, cobra's own included, fail with a
// usage error (exit code 2).
func usageArgs(cmd *cobra.Command) {
	if check := cmd.Args; check != nil {
		cmd.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				return usageError{err.Error()}
			}
			return nil
		}
	}
	for _, sub := range cmd.Commands() {
		usageArgs(sub)
	}
}
