package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
)

func newHealthCommand(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "health UPSTREAM",
		Short: "Show every proxy's view of one upstream and the fleet verdict",
		Long: `Show the fleet verdict on an upstream (healthy; degraded: its breaker is open or half-open
on some proxies; down: on all of them; unknown: no proxy has a fresh report of it) and
each reporting proxy's view from its last report: breaker state, attempts per second,
error rate and errors by kind, answers with status 429, latency P50 and P95 over the
report interval, attempts in flight, and the attempts and errors counted since the proxy
started (as its /metrics shows them). A report is stale after three report intervals; a
stale view is listed but not judged. -o json prints what GET /api/v1/upstreams/{name}/health
answers.`,
		Example: `  llmproxyctl health openai
  llmproxyctl health openai -o json`,
		Args: cobra.ExactArgs(1),
		ValidArgsFunction: func(_ *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return c.completeFromServer(func(ctx context.Context, client adminv1.AdminServiceClient) ([]string, error) {
				resp, err := client.ListUpstreams(ctx, &adminv1.ListUpstreamsRequest{})
				return namesOf(resp.GetUpstreams()), err
			}, toComplete)
		},
	}
	out := addOutputFlag(cmd, "table", "yaml", "json")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		client, ctx, done, err := c.connect()
		if err != nil {
			return err
		}
		defer done()
		h, err := client.GetUpstreamHealth(ctx, &adminv1.GetUpstreamHealthRequest{Name: args[0]})
		if err != nil {
			return err
		}
		return c.printMessage(out.value, h, func() error { return c.healthTable(h, time.Now()) })
	}
	return cmd
}

// healthTable prints the verdict, the fleet's sums, and a row per proxy's view at now.
func (c *cli) healthTable(h *adminv1.UpstreamHealth, now time.Time) error {
	row := upstreamRow(h)
	fmt.Fprintf(c.stdout, "%s: %s: %s\n", h.GetName(), h.GetVerdict(), h.GetReason())
	fmt.Fprintf(c.stdout, "fresh proxies: %d; %.1f attempts/s, %s errors, %d answered 429, %d in flight\n",
		row.Reporting, row.RequestsPerSecond, percent(row.ErrorRate), row.RateLimited, row.InFlight)
	if len(h.GetProxies()) == 0 {
		fmt.Fprintln(c.stdout, "no proxy has reported this upstream")
		return nil
	}
	fmt.Fprintln(c.stdout)
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tBREAKER\tLAST REPORT\tREQ/S\tERR%\tERRORS BY KIND\t429s\tP50\tP95\tIN-FLIGHT\tTOTAL REQUESTS\tTOTAL ERRORS")
	for i, p := range h.GetProxies() {
		v := row.Proxies[i]
		age := now.Sub(v.ReportTime).Seconds()
		report := ageText(&age)
		if v.Stale {
			report += " (stale)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f\t%s\t%s\t%d\t%s\t%s\t%d\t%d\t%d\n", v.NodeID, v.Breaker, report, v.RequestsPerSecond,
			percent(v.ErrorRate), errorKinds(p.GetErrorsByKind()), v.RateLimited, latencyText(v.LatencyP50Seconds),
			latencyText(v.LatencyP95Seconds), v.InFlight, v.TotalRequests, v.TotalErrors)
	}
	return tw.Flush()
}

// errorKinds lists the non-zero error counts of a report interval by kind, named as the
// error label of llmproxy_upstream_errors_total (the proto's field names), e.g.
// "status_5xx 3, timeout 1"; "-" when there are none.
func errorKinds(e *adminv1.UpstreamErrors) string {
	var parts []string
	m := e.ProtoReflect()
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if n := m.Get(fd).Uint(); n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", fd.Name(), n))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}
