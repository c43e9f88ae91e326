package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newValidateCommand(c *cli) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "validate -f FILE",
		Short: "Check a YAML config file locally, without a server",
		Long: `Check a YAML config file as the control plane would, without a server, and list every fault
with its line and column (exit code 4). - reads standard input.`,
		Example: `  llmproxyctl validate -f config.yaml
  kubectl get configmap llmproxy -o jsonpath='{.data.config\.yaml}' | llmproxyctl validate -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usagef("validate needs -f FILE")
			}
			f, err := c.readFile(file)
			if err != nil {
				return err
			}
			if _, err := f.Validate(); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "%s: valid\n", file)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "YAML config `FILE`, - for stdin")
	_ = cmd.MarkFlagFilename("file", "yaml", "yml")
	return cmd
}
