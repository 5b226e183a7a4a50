import MeshDHT
import MeshMetrics

/// Media figures of the calls that ended since the node started, so that the node-wide media counters never go
/// back when a call ends and its media is dropped.
struct MediaTotals {
    var packetsSent = 0
    var packetsReceived = 0
    var packetsLost = 0
    var packetsLate = 0
    var framesConcealed = 0
    var fecRecovered = 0
    var redundancyRecovered = 0
    var srtpRejected = 0
    var feedFramesDropped = 0

    mutating func add(_ s: CallMediaStats) {
        packetsSent += s.packetsSent
        packetsReceived += s.packetsReceived
        packetsLost += s.packetsLost
        packetsLate += s.packetsLate
        framesConcealed += s.framesConcealed
        fecRecovered += s.fecRecovered
        redundancyRecovered += s.redundancyRecovered
        srtpRejected += s.srtpRejected
        feedFramesDropped += s.feedFramesDropped
    }
}

/// The one place where the node's figures get their metric names (docs/metrics.md lists them all): every core's
/// counters, the socket's, the control socket's, and the calls'. Counters are `meshnode_<area>_<what>_total`,
/// gauges are plain, units are seconds and bytes, and a counter kept per cause is one family with a `reason` label.
extension NodeRuntime {
    /// Built on the node's event loop, where all of this state lives.
    func metricsSnapshot() -> MetricsSnapshot {
        loop.preconditionInEventLoop()
        let now = Self.now()
        var m = MetricsSnapshot()
        m.families.append(.init(name: "meshnode_info", type: .gauge, help: "Always 1; the node's address and version as labels.",
                                samples: [.init(labels: ["node": nodeKey.address.checksummed, "version": MeshVersion.string], value: 1)]))
        m.add("meshnode_uptime_seconds", .gauge, "Seconds since the node started.", Double(now - startedAt) / 1000)
        m.add("meshnode_peers_up", .gauge, "Neighbours with an established link.", links.upPeers.count)
        m.add("meshnode_calls_active", .gauge, "Calls of hosted wallets not yet ended.", calls.calls.values.filter { $0.state != .ended }.count)
        m.add("meshnode_relay_sessions", .gauge, "Forwarding sessions this node holds (as caller, relay or callee).", relay.sessionCount)

        let l = links.counters
        m.add("meshnode_link_packets_in_total", .counter, "Datagrams received on the node's UDP port for links.", l.packetsIn)
        m.add("meshnode_link_packets_out_total", .counter, "Link datagrams sent.", l.packetsOut)
        m.add("meshnode_link_bytes_in_total", .counter, "Bytes of link datagrams received.", l.bytesIn)
        m.add("meshnode_link_bytes_out_total", .counter, "Bytes of link datagrams sent.", l.bytesOut)
        m.add("meshnode_link_dropped_total", .counter, "Link datagrams dropped, by reason (docs/links.md).", by: "reason", [
            "malformed": l.malformed, "unknown_session": l.unknownSession, "auth_failed": l.authFailed, "replayed": l.replayed,
            "handshake_refused": l.handshakeRefused, "pin_mismatch": l.pinMismatch, "not_allowed": l.notAllowed,
            "mac_failed": l.macFailed, "wrong_responder": l.wrongResponder, "cookie_required": l.cookieRequired,
            "rate_limited": l.rateLimited, "clock_skew": l.clockSkew,
        ])
        m.add("meshnode_link_signature_recoveries_total", .counter, "Signature recoveries done for handshake initiations.",
              l.signatureRecoveries)

        let d = dht.counters
        m.add("meshnode_dht_messages_in_total", .counter, "DHT messages received.", d.messagesIn)
        m.add("meshnode_dht_messages_out_total", .counter, "DHT messages sent.", d.messagesOut)
        m.add("meshnode_dht_bytes_in_total", .counter, "Bytes of DHT datagrams received.", d.bytesIn)
        m.add("meshnode_dht_bytes_out_total", .counter, "Bytes of DHT datagrams sent.", d.bytesOut)
        m.add("meshnode_dht_dropped_total", .counter, "DHT datagrams dropped before the protocol saw them, by reason (docs/dht.md).",
              by: "reason", [
                  "malformed": d.malformed, "bad_signature": d.badSignature, "stale_timestamp": d.staleTimestamp,
                  "replayed": d.replayed, "future_stamped": d.futureStampedRefused, "rate_limited": d.rateLimited,
                  "bad_cookie": d.badCookies,
              ])
        m.add("meshnode_dht_cookies_sent_total", .counter, "Requests from unproven addresses answered with a cookie (under load, or writes).",
              d.cookiesSent)
        m.add("meshnode_dht_cookies_received_total", .counter, "Cookies other nodes handed this node (its requests went again with them).",
              d.cookiesReceived)
        m.add("meshnode_dht_unexpected_responses_total", .counter, "Responses nobody asked for, or from the wrong node.",
              d.unexpectedResponse)
        m.add("meshnode_dht_clock_notices_sent_total", .counter, "Requests refused for their timestamp, answered with a clock notice.",
              d.clockNoticesSent)
        m.add("meshnode_dht_clock_notices_received_total", .counter, "This node's requests refused by another node for this node's clock.",
              d.clockNoticesReceived)
        var refusals: [MetricsSnapshot.Sample] = RecordRefusal.allCases.map { refusal in
            MetricsSnapshot.Sample(labels: ["reason": Self.snakeCase(refusal.rawValue)], value: Double(d.refusedRecords[refusal] ?? 0))
        }
        refusals.append(MetricsSnapshot.Sample(labels: ["reason": "store_full"], value: Double(d.storeFull)))
        refusals.append(MetricsSnapshot.Sample(labels: ["reason": "quota_exceeded"], value: Double(d.quotaExceeded)))
        m.families.append(.init(name: "meshnode_dht_records_refused_total", type: .counter,
                                help: "Presence records refused (STOREs and lookup answers), by reason.", samples: refusals))
        m.add("meshnode_dht_records_evicted_total", .counter, "Records evicted for a STORE from a source holding fewer.", d.evicted)
        m.add("meshnode_dht_contacts_prefix_limited_total", .counter, "Contacts kept out of the routing table by per-prefix limits.",
              d.prefixLimited)
        m.add("meshnode_dht_replies_trimmed_total", .counter, "Answers cut (or not sent) to the size of a request from an unverified address.",
              d.trimmedReplies)
        m.add("meshnode_dht_request_timeouts_total", .counter, "DHT requests that timed out.", d.timeouts)
        m.add("meshnode_dht_lookups_started_total", .counter, "Iterative lookups started.", d.lookupsStarted)
        m.add("meshnode_dht_lookups_finished_total", .counter, "Iterative lookups finished.", d.lookupsFinished)
        m.add("meshnode_dht_contacts", .gauge, "Contacts in the routing table.", dht.contactCount)
        m.add("meshnode_dht_records", .gauge, "Presence records held.", dht.storedRecords.count)
        m.add("meshnode_dht_joined", .gauge, "1 once a bootstrap node answered and the own-id lookup got answers, else 0.",
              dht.isJoined ? 1 : 0)

        let g = gossip.counters
        m.add("meshnode_gossip_refused_total", .counter, "Gossip messages or announcements refused, by reason (docs/gossip.md).",
              by: "reason", [
                  "malformed": g.malformed, "route_limit": g.refusedRoutes, "forged": g.forged, "expired": g.expired,
                  "outdated": g.outdated,
              ])
        m.add("meshnode_gossip_deferred_total", .counter, "Entries left for later because the neighbour's signature-check budget was spent.",
              g.deferred)
        m.add("meshnode_gossip_signature_checks_total", .counter, "Announcement signatures checked.", g.verifications)
        m.add("meshnode_gossip_routes_refuted_total", .counter, "Routes dropped because their home node did not confirm the wallet.",
              g.refuted)
        let routes = gossip.routes(nowMs: now)
        m.add("meshnode_gossip_routes", .gauge, "Routes known from gossip, by kind (this node's own included).", by: "kind", [
            "wallet": routes.count(where: { $0.kind == "wallet" }), "node": routes.count(where: { $0.kind == "node" }),
        ])

        let r = relay.counters
        m.add("meshnode_relay_forwarded_packets_total", .counter, "Chain packets forwarded for others.", r.forwardedPackets)
        m.add("meshnode_relay_forwarded_bytes_total", .counter, "Bytes of chain packets forwarded for others.", r.forwardedBytes)
        m.add("meshnode_relay_dropped_total", .counter, "Chain packets dropped, by reason (docs/forwarding.md).", by: "reason", [
            "malformed": r.malformed, "unknown_label": r.unknownLabel, "wrong_neighbour": r.wrongNeighbour,
            "forged_probe": r.forgedProbes, "quelched": r.quelchDrops,
        ])
        m.add("meshnode_relay_setups_total", .counter, "Chain set-ups asked of this node as a relay, by outcome.", by: "outcome", [
            "relayed": r.setupsRelayed, "refused": r.setupsRefused, "rate_limited": r.setupsRateLimited,
        ])
        m.add("meshnode_relay_failovers_total", .counter, "Calls of this node moved to another chain.", r.failovers)
        let (ts, tr) = (core.trunks.sent, core.trunks.received)
        m.add("meshnode_trunk_trunks_total", .counter, "Trunks (shared datagrams of chain packets) sent and received, by direction.",
              by: "direction", ["out": ts.trunks, "in": tr.trunks])
        m.add("meshnode_trunk_entries_out_total", .counter, "Chain packets sent in trunks, by header kind.", by: "kind", [
            "full": ts.fullEntries, "mini": ts.miniEntries,
        ])
        m.add("meshnode_trunk_entries_in_total", .counter, "Chain packets received in trunks and restored, by header kind.", by: "kind", [
            "full": tr.fullEntries, "mini": tr.miniEntries,
        ])
        m.add("meshnode_trunk_dropped_total", .counter, "Trunk entries dropped, by reason (docs/forwarding.md).", by: "reason", [
            "malformed": tr.malformed, "mini_without_context": tr.miniWithoutContext, "mini_mismatch": tr.miniMismatch,
        ])

        let f = core.finder.counters
        m.add("meshnode_finder_answered_total", .counter, "Wallet queries over links this node answered.", f.answered)
        m.add("meshnode_finder_dropped_total", .counter, "Wallet queries over links dropped, by reason (docs/routing.md).", by: "reason", [
            "malformed": f.malformed, "duplicate": f.duplicates, "rate_limited": f.rateLimited, "forged": f.forged,
        ])

        m.add("meshnode_app_dropped_total", .counter, "Input dropped above the link layer, by reason.", by: "reason", [
            "malformed_app": core.counters.malformedApp, "malformed_call": calls.malformed, "media_unknown_call": counters.mediaUnknownCall,
            "call_wrong_chain": core.counters.callWrongChain, "resolve_unsolicited": core.counters.resolveUnsolicited,
            "control_bad_mac": counters.controlBadMac, "quelch_refused": counters.quelchRefused,
            "verdict_refused": counters.verdictRefused,
        ])

        m.add("meshnode_direct_calls", .gauge, "Calls whose media is on a direct path now (docs/calls.md, \"Direct paths\").",
              directs.values.filter(\.isDirect).count)
        m.add("meshnode_direct_attempts_total", .counter, "Direct-path attempts (ICE agents started for calls).", counters.directAttempts)
        m.add("meshnode_direct_successes_total", .counter, "Direct-path attempts whose media moved onto the direct path.",
              counters.directSuccesses)
        m.add("meshnode_direct_fallbacks_total", .counter, "Calls moved back from a direct path to their relay chain.",
              counters.directFallbacks)
        m.add("meshnode_direct_seconds_to_direct_total", .counter,
              "Sum over calls of the time from answer to media on the direct path (with successes: the mean).",
              Double(counters.msToDirectTotal) / 1000)
        m.add("meshnode_direct_ice_bad_mac_total", .counter, "ICE signalling messages and direct-path keepalives dropped as not authentic (a wrong MAC, a replay, a reflection).", counters.iceBadMac)

        let s = stun.counters
        m.add("meshnode_stun_requests_total", .counter, "STUN Binding Requests received on the node's UDP port.", s.requests)
        m.add("meshnode_stun_answered_total", .counter, "STUN Binding Requests answered with the source's address.", s.answered)
        m.add("meshnode_stun_dropped_total", .counter, "STUN-range datagrams (first byte 0–3) not answered, by reason (docs/stun.md).",
              by: "reason", [
                  "malformed": s.malformed, "not_binding_request": s.notBindingRequest, "unknown_attribute": s.unknownAttribute,
                  "rate_limited": s.rateLimited,
              ])

        m.add("meshnode_udp_send_failed_total", .counter, "Datagrams the kernel refused to send.", counters.sendFailed)
        if let status = udpSocket?.status() {
            m.add("meshnode_udp_kernel_drops_total", .counter, "Datagrams the kernel dropped for a full receive buffer.", status.kernelDrops)
            m.add("meshnode_udp_receive_buffer_bytes", .gauge, "The UDP receive buffer as the kernel granted it.", status.receiveBufferBytes)
            m.add("meshnode_udp_send_buffer_bytes", .gauge, "The UDP send buffer as the kernel granted it.", status.sendBufferBytes)
        }

        let store = writer.counters
        m.add("meshnode_store_writes_waiting", .gauge, "Database writes and recording appends waiting for the writer thread.", store.waiting)
        m.add("meshnode_store_writes_shed_total", .counter, "Writes refused because the writer's queue was full.", store.shed)
        m.add("meshnode_store_writes_failed_total", .counter, "Writes that failed.", store.failed)

        if let c = control?.counters {
            m.add("meshnode_control_connections_accepted_total", .counter, "Control socket connections accepted.", c.connectionsAccepted)
            m.add("meshnode_control_oversized_requests_total", .counter, "Control requests over 64 KiB (the connection closed).",
                  c.oversizedRequests)
            m.add("meshnode_control_slow_clients_closed_total", .counter, "Control clients closed for more than 4 MiB of unread answers.",
                  c.slowClientsClosed)
            m.add("meshnode_control_accept_backoffs_total", .counter, "Pauses in accepting after accept failed.", c.acceptBackoffs)
        }

        let live = media.sorted { $0.key.description < $1.key.description }.map { ($0.key, $0.value.stats) }
        var t = endedMedia
        for (_, stats) in live { t.add(stats) }
        m.add("meshnode_media_packets_sent_total", .counter, "Media packets sent, all calls.", t.packetsSent)
        m.add("meshnode_media_packets_received_total", .counter, "Media packets received, all calls.", t.packetsReceived)
        // RFC 3550's expected minus received: a reordered packet arriving late lowers it again, so not a counter.
        m.add("meshnode_media_packets_lost", .gauge, "Media packets missing (expected minus received), all calls.", t.packetsLost)
        m.add("meshnode_media_packets_late_total", .counter, "Media packets that came too late to be played, all calls.", t.packetsLate)
        m.add("meshnode_media_frames_concealed_total", .counter, "20 ms frames concealed, all calls.", t.framesConcealed)
        m.add("meshnode_media_recovered_total", .counter, "Lost packets played from a recovery, by how.", by: "by", [
            "fec": t.fecRecovered, "redundancy": t.redundancyRecovered,
        ])
        m.add("meshnode_media_srtp_rejected_total", .counter, "Media packets SRTP refused, all calls.", t.srtpRejected)
        m.add("meshnode_media_feed_frames_dropped_total", .counter, "Frames of a client's feed dropped to keep its latency low.",
              t.feedFramesDropped)
        func perCall(_ name: String, _ help: String, _ value: (CallMediaStats) -> Double) {
            m.families.append(.init(name: name, type: .gauge, help: help,
                                    samples: live.map { .init(labels: ["call": $0.0.description], value: value($0.1)) }))
        }
        perCall("meshnode_call_jitter_seconds", "Interarrival jitter of an active call's media.") { $0.jitterMs / 1000 }
        perCall("meshnode_call_playout_delay_seconds", "An active call's playout delay now.") { $0.currentPlayoutDelayMs / 1000 }
        perCall("meshnode_call_bitrate_bits_per_second", "The Opus bitrate this side of an active call sends.") { Double($0.bitrate) }
        return m
    }

    /// `tooManyEndpoints` → `too_many_endpoints`.
    static func snakeCase(_ name: String) -> String {
        name.reduce(into: "") { out, c in
            if c.isUppercase { out += "_" + c.lowercased() } else { out.append(c) }
        }
    }
}
