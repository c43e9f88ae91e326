package main

import (
	"strings"

	"github.com/spf13/cobra"
)

func newGetCommand(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "get " + strings.Join(kindWords(0), "|") + " [NAME]",
		Short: "Print upstreams, groups, forwards or consumers, or one of them by NAME",
		Long: `Print resources of the stored config, secrets redacted: as YAML in the file's schema (apply
takes it back), or as JSON in the REST API's shape.`,
		Example: `  llmproxyctl get upstreams
  llmproxyctl get groups main -o json`,
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: c.completeKindAndName(0),
	}
	out := addOutputFlag(cmd, "yaml", "json")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		k, ok := kindOf(args[0])
		if !ok {
			return usagef("get: unknown kind %q (want %s)", args[0], kindChoices(0))
		}
		return c.printKind(k, args[1:], out.value)
	}
	return cmd
}

// printKind prints every resource of kind k, or the one named by names[0] when given.
func (c *cli) printKind(k resourceKind, names []string, format string) error {
	name := ""
	if len(names) > 0 {
		name = names[0]
	}
	client, ctx, done, err := c.connect()
	if err != nil {
		return err
	}
	defer done()
	cfg, err := k.get(ctx, client, name)
	if err != nil {
		return err
	}
	return c.printConfig(cfg, format)
}
