package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/llmproxy-go/llmproxy/controlplane/configfile"
	"github.com/llmproxy-go/llmproxy/controlplane/validate"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
)

func newApplyCommand(c *cli) *cobra.Command {
	var (
		file        string
		diff, force bool
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE [--diff] [--wait[=DURATION]] [-m MESSAGE]",
		Short: "Replace the whole config with a YAML file (- for stdin)",
		Long: `Replace the whole config with a YAML file in one atomic write, and print the new revision.
The control plane validates it first; its errors point at the file's lines. Secrets written
as <redacted> (as export prints them) keep their stored values.

--diff (or --dry-run) prints what the file would change against the current revision, by
resource and field, and stores nothing. A file that would delete more than half of the
forwards, routes or upstreams at once is refused (exit code 4), the usual sign of a
truncated file, unless --force is given. --wait prints how far the new revision reached the
fleet; see the exit codes in llmproxyctl --help.`,
		Example: `  llmproxyctl apply -f config.yaml -m "route chat to the new cluster"
  llmproxyctl apply -f config.yaml --diff
  llmproxyctl apply -f config.yaml --wait
  llmproxyctl export | llmproxyctl apply -f - --dry-run`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "YAML config `FILE`, - for stdin")
	_ = cmd.MarkFlagFilename("file", "yaml", "yml")
	cmd.Flags().BoolVar(&diff, "diff", false, "print what the file would change against the current revision; store nothing (a dry run)")
	cmd.Flags().BoolVar(&force, "force", false, "apply even when the file deletes more than half of the forwards, routes or upstreams")
	w := addWriteFlags(c, cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if file == "" {
			return usagef("apply needs -f FILE")
		}
		if diff {
			if w.wait > 0 {
				return usagef("--wait and --diff exclude each other: --diff stores nothing to wait for")
			}
			w.dryRun = true
		}
		return c.apply(file, w, force)
	}
	return cmd
}

func (c *cli) apply(path string, w *writeOptions, force bool) error {
	f, err := c.readFile(path)
	if err != nil {
		return err
	}
	resp, err := send(w, adminv1.AdminServiceClient.ApplyConfig, &adminv1.ApplyConfigRequest{Config: f.Config(), Force: force})
	if status.Code(err) == codes.FailedPrecondition && !force {
		return hinted{err, "apply --force applies it anyway"}
	}
	if err != nil {
		return locateViolations(f, err)
	}
	return c.finishWrite(w, resp, fmt.Sprintf("revision %d", resp.GetRevision()))
}

// locateViolations turns an INVALID_ARGUMENT status carrying field violations into the
// same errors validate prints, pointing into f; other errors pass through.
func locateViolations(f *configfile.File, err error) error {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.InvalidArgument {
		return err
	}
	var fes []error
	for _, d := range st.Details() {
		br, ok := d.(*errdetails.BadRequest)
		if !ok {
			continue
		}
		for _, v := range br.GetFieldViolations() {
			fes = append(fes, &validate.FieldError{Path: v.GetField(), Kind: validate.ErrInvalid, Msg: v.GetDescription()})
		}
	}
	if len(fes) == 0 {
		return err
	}
	return f.Locate(errors.Join(fes...))
}
