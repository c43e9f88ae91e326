package main

import (
	"fmt"

	"github.com/spf13/cobra"

	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
)

func newRollbackCommand(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollback REV",
		Short: "Apply a kept revision's config again, as a new revision",
		Long: `Apply the config of revision REV again, as a new revision: the history stays linear, and the
rollback is in it (operation RollbackRevision, message "rollback to revision REV" unless -m
gives one). Secrets come from the stored revision, never from this client. The config is
validated like any write; --dry-run prints what the rollback would change. With
--expected-revision it happens only if nobody wrote since you looked.`,
		Example: `  llmproxyctl history
  llmproxyctl rollback 41 --dry-run
  llmproxyctl rollback 41 --expected-revision 44 -m "undo the chat route change" --wait`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeRevisions(1),
	}
	w := addWriteFlags(c, cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		rev, err := revisionArg("REV", args[0])
		if err != nil {
			return err
		}
		resp, err := send(w, adminv1.AdminServiceClient.RollbackRevision, &adminv1.RollbackRevisionRequest{Revision: rev})
		if err != nil {
			return err
		}
		return c.finishWrite(w, resp, fmt.Sprintf("revision %d: the config of revision %d", resp.GetRevision(), rev))
	}
	return cmd
}
