package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
)

// usageDimensions are the values of usage --by, offered by completion; the control plane
// checks them.
var usageDimensions = []string{"model", "consumer", "upstream"}

func newUsageCommand(c *cli) *cobra.Command {
	var by, window, step string
	cmd := &cobra.Command{
		Use:   "usage --by model|consumer|upstream [--window 1h] [--step 5m -o json|yaml]",
		Short: "Sum requests, errors and tokens by model, consumer or upstream over a window",
		Long: `Sum the fleet's traffic over the last --window (from 1m to 31d: 15m, 1h, 7d, ...) by model
(the request body's model), consumer or upstream, from the per-minute rollups the control
plane keeps in its store: requests, errors (answers of status 500 or more; for upstreams,
failed attempts, retries included), prompt and completion tokens, most tokens first, and
their total. --step adds a time series of points that wide to every entry, with -o json
or yaml. -o json prints what GET /api/v1/usage answers.`,
		Example: `  llmproxyctl usage --by model
  llmproxyctl usage --by upstream --window 24h
  llmproxyctl usage --by consumer --window 7d --step 1h -o json`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringVar(&by, "by", "", "sum by `DIMENSION`: "+strings.Join(usageDimensions, ", "))
	cmd.Flags().StringVar(&window, "window", "1h", "how far back from now, a `DURATION` such as 15m, 1h or 7d")
	cmd.Flags().StringVar(&step, "step", "", "with -o json|yaml, a time series of points `DURATION` wide (whole minutes)")
	_ = cmd.RegisterFlagCompletionFunc("by", cobra.FixedCompletions(usageDimensions, cobra.ShellCompDirectiveNoFileComp))
	out := addOutputFlag(cmd, "table", "yaml", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if by == "" {
			return usagef("usage needs --by %s", strings.Join(usageDimensions, ", "))
		}
		if step != "" && out.value == "table" {
			return usagef("--step needs -o json or -o yaml (the table shows totals)")
		}
		client, ctx, done, err := c.connect()
		if err != nil {
			return err
		}
		defer done()
		resp, err := client.GetUsage(ctx, &adminv1.GetUsageRequest{By: by, Window: window, Step: step})
		if err != nil {
			return err
		}
		return c.printMessage(out.value, resp, func() error { return c.usageTable(resp) })
	}
	return cmd
}

// usageTable prints the window, a row per entry and the total.
func (c *cli) usageTable(resp *adminv1.GetUsageResponse) error {
	const layout = "2006-01-02 15:04"
	fmt.Fprintf(c.stdout, "usage by %s from %s to %s\n", resp.GetBy(),
		resp.GetStartTime().AsTime().Local().Format(layout), resp.GetEndTime().AsTime().Local().Format(layout))
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\tREQUESTS\tERRORS\tPROMPT TOKENS\tCOMPLETION TOKENS\n", strings.ToUpper(resp.GetBy()))
	row := func(name string, e *adminv1.UsageEntry) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", name, e.GetRequests(), e.GetErrors(), e.GetPromptTokens(), e.GetCompletionTokens())
	}
	for _, e := range resp.GetEntries() {
		name := e.GetName()
		switch {
		case name == "" && resp.GetBy() == "model":
			name = "(body not read)" // a large streamed body: see UsageEntry.name
		case name == "":
			name = "(none)"
		}
		row(name, e)
	}
	row("total", resp.GetTotal())
	return tw.Flush()
}
