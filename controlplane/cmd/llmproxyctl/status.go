package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
)

func newStatusCommand(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "List the proxies of the fleet",
		Long: `List the proxies connected to the control plane, or known to it: node, connected since, the
last revision each acknowledged and its last refusal (NACK). -o json prints what
GET /api/v1/proxies answers.`,
		Args: cobra.NoArgs,
	}
	out := addOutputFlag(cmd, "table", "yaml", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		client, ctx, done, err := c.connect()
		if err != nil {
			return err
		}
		defer done()
		resp, err := client.ListProxies(ctx, &adminv1.ListProxiesRequest{})
		if err != nil {
			return err
		}
		return c.printMessage(out.value, resp, func() error { return c.statusTable(resp) })
	}
	return cmd
}

func (c *cli) statusTable(resp *adminv1.ListProxiesResponse) error {
	fmt.Fprintf(c.stdout, "control plane revision %d, %d proxies\n", resp.GetRevision(), len(resp.GetProxies()))
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tCONNECTED\tSINCE\tACKED\tLAST NACK\tADDRESS")
	for _, p := range resp.GetProxies() {
		since := timeText(p.GetConnectedSince())
		nack := "-"
		if p.GetLastNackRevision() != 0 || p.GetLastNackError() != "" {
			nack = fmt.Sprintf("%d: %s", p.GetLastNackRevision(), oneLine(p.GetLastNackError()))
		}
		addr := p.GetAddress()
		if addr == "" {
			addr = "-"
		}
		connected := "no"
		if p.GetConnected() {
			connected = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", p.GetNodeId(), connected, since, p.GetAckedRevision(), nack, addr)
	}
	return tw.Flush()
}
