package main

import (
	"fmt"

	"github.com/spf13/cobra"

	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
)

func newCacheCommand(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cache",
		Short: "Manage the response cache",
	}
	cmd.AddCommand(newCachePurgeCommand(c))
	return cmd
}

func newCachePurgeCommand(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "purge GROUP",
		Short: "Empty an upstream group's response cache on every proxy",
		Long: `Empty the response cache of upstream group GROUP on every proxy at once: the control plane
raises the group's cache epoch in a new revision, and once a proxy applies that revision it
finds no older entry, in memory or in Redis, without scanning any key. With --wait the
answer comes once every connected proxy has applied it (or refused it).`,
		Example: `  llmproxyctl cache purge main
  llmproxyctl cache purge main -m "bad answers cached after the model update" --wait`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeKindAndNameOf("group"),
	}
	w := addWriteFlags(c, cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		resp, err := send(w, adminv1.AdminServiceClient.PurgeCache, &adminv1.PurgeCacheRequest{Name: args[0]})
		if err != nil {
			return err
		}
		return c.finishWrite(w, resp, fmt.Sprintf("revision %d: cache of group %s purged (epoch %d)", resp.GetRevision(), args[0], resp.GetEpoch()))
	}
	return cmd
}
