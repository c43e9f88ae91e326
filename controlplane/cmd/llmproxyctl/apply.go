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
	var file string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "apply -f FILE [--dry-run]",
		Short: "Replace the whole config with a YAML file (- for stdin)",
		Long: `Replace the whole config with a YAML file in one atomic write, and print the new revision.
The control plane validates it first; its errors point at the file's lines. Secrets written
as <redacted> (as export prints them) keep their stored values.`,
		Example: `  llmproxyctl apply -f config.yaml
  llmproxyctl export | llmproxyctl apply -f - --dry-run`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usagef("apply needs -f FILE")
			}
			return c.apply(file, dryRun)
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "YAML config `FILE`, - for stdin")
	_ = cmd.MarkFlagFilename("file", "yaml", "yml")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "validate on the server without storing")
	return cmd
}

func (c *cli) apply(path string, dryRun bool) error {
	f, err := c.readFile(path)
	if err != nil {
		return err
	}
	client, ctx, done, err := c.connect()
	if err != nil {
		return err
	}
	defer done()
	resp, err := client.ApplyConfig(ctx, &adminv1.ApplyConfigRequest{
		Config:           f.Config(),
		DryRun:           dryRun,
		ExpectedRevision: c.expected.ptr(),
	})
	if err != nil {
		return locateViolations(f, err)
	}
	if resp.GetDryRun() {
		fmt.Fprintf(c.stdout, "dry run: config is valid (current revision %d)\n", resp.GetRevision())
		return nil
	}
	fmt.Fprintf(c.stdout, "revision %d\n", resp.GetRevision())
	return nil
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
