package main

import (
	"github.com/spf13/cobra"

	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
)

func newExportCommand(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Print the whole config (apply takes it back)",
		Long: `Print the whole stored config, secrets redacted: as YAML that apply -f takes back unchanged,
or as JSON that PUT /api/v1/config takes.`,
		Example: `  llmproxyctl export > backup.yaml
  llmproxyctl export -o json`,
		Args: cobra.NoArgs,
	}
	out := addOutputFlag(cmd, "yaml", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		client, ctx, done, err := c.connect()
		if err != nil {
			return err
		}
		defer done()
		resp, err := client.GetConfig(ctx, &adminv1.GetConfigRequest{})
		if err != nil {
			return err
		}
		return c.printConfig(resp.GetConfig(), out.value)
	}
	return cmd
}
