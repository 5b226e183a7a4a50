import Foundation

/// How `node-ctl calls` and `mesh-node call` print a relay chain from its JSON (`calls.list`'s `chains` entries).
public enum ChainText {
    /// "0xB… (1.2 ms, 0.0 %) > 0xC… (0.9 ms, 0.0 %)": each node with the RTT and loss of the link into it.
    public static func describe(_ chain: JSONValue) -> String {
        let hops = chain["hops"]?.arrayValue ?? []
        let nodes = (chain["nodes"]?.arrayValue ?? []).enumerated().map { i, node in
            let hop = i < hops.count ? hops[i] : .null
            let rtt = hop["rttMs"]?.doubleValue.map { String(format: "%.1f ms", $0) } ?? "-"
            let loss = hop["lossPercent"]?.doubleValue.map { String(format: "%.1f %%", $0) } ?? "-"
            return "\(node.stringValue ?? "?") (\(rtt), \(loss))"
        }
        return nodes.isEmpty ? "(being set up)" : nodes.joined(separator: " > ")
    }
}
