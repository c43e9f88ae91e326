package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func newDeleteCommand(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "delete " + strings.Join(kindWords(1), "|") + " NAME",
		Short: "Delete one upstream, group, forward or consumer",
		Long: `Delete one resource. The control plane refuses (exit code 4) to delete what the config still
uses, and names the users.`,
		Example: `  llmproxyctl delete upstream vllm -m "vllm retired"
  llmproxyctl delete forward internal --dry-run`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeKindAndName(1),
	}
	w := addWriteFlags(c, cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		k, ok := kindOf(args[0])
		if !ok {
			return usagef("delete: unknown kind %q (want %s)", args[0], kindChoices(1))
		}
		resp, err := k.del(w, args[1])
		if err != nil {
			return err
		}
		return c.finishWrite(w, resp, fmt.Sprintf("%s %q deleted (revision %d)", k.name, args[1], resp.GetRevision()))
	}
	return cmd
}
