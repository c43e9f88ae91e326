package main

import (
	"strconv"

	"github.com/spf13/cobra"

	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
)

func newDiffCommand(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "diff REV [BASE]",
		Short: "Show what changed between two revisions",
		Long: `Show what changed from revision BASE (default: the one before REV; 0: the empty config) to
revision REV, by resource: each upstream, group, forward or setting added, removed or
changed, with every field that differs as "path: old → new". Secrets are never shown: a
changed secret reads "changed (secret)". -o json prints what
GET /api/v1/revisions/REV/diff?base=BASE answers.`,
		Example: `  llmproxyctl diff 7
  llmproxyctl diff 7 3
  llmproxyctl diff 7 -o json`,
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: c.completeRevisions(2),
	}
	out := addOutputFlag(cmd, "text", "yaml", "json")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		req := &adminv1.DiffRevisionsRequest{}
		var err error
		if req.Revision, err = revisionArg("REV", args[0]); err != nil {
			return err
		}
		if len(args) == 2 {
			base, err := revisionArg("BASE", args[1])
			if err != nil {
				return err
			}
			req.Base = &base
		}
		client, ctx, done, err := c.connect()
		if err != nil {
			return err
		}
		defer done()
		d, err := client.DiffRevisions(ctx, req)
		if err != nil {
			return err
		}
		return c.printMessage(out.value, d, func() error { c.printDiff(d); return nil })
	}
	return cmd
}

// revisionArg reads the revision number of the argument named name.
func revisionArg(name, arg string) (uint64, error) {
	v, err := strconv.ParseUint(arg, 10, 64)
	if err != nil {
		return 0, usagef("%s: %q is not a revision number", name, arg)
	}
	return v, nil
}
