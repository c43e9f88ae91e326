package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func newDeleteCommand(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "delete " + strings.Join(kindWords(1), "|") + " NAME",
		Short: "Delete one upstream, group or forward",
		Long: `Delete one resource. The control plane refuses (exit code 4) to delete what the config still
uses, and names the users.`,
		Example:           `  llmproxyctl delete upstream vllm`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeKindAndName(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, ok := kindOf(args[0])
			if !ok {
				return usagef("delete: unknown kind %q (want upstream, group or forward)", args[0])
			}
			client, ctx, done, err := c.connect()
			if err != nil {
				return err
			}
			defer done()
			resp, err := k.del(ctx, client, args[1], c.expected.ptr())
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "%s %q deleted (revision %d)\n", k.name, args[1], resp.GetRevision())
			return nil
		},
	}
}
