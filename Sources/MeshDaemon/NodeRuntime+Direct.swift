import MeshCall
import MeshControl
import MeshICE
import NIOCore

/// Direct paths (docs/calls.md, "Direct paths"): per answered call, one ICE agent at each end, signalled over the
/// call's chain; media moves onto the selected pair make-before-break and back onto the chain, which stays warm,
/// as soon as the pair goes quiet. Everything here runs on the event loop; agents' events hop onto it.
extension NodeRuntime {
    /// The call is answered: with direct paths on (and the node not relay-only), its path is set up; the caller's first attempt starts on the next
    /// media tick, the callee's when the caller's credentials come.
    func startDirect(_ id: CallID, keys: SRTPKeys, caller: Bool, now: Int64) {
        guard config.directPaths, !config.relayOnly else { return }
        let key = IceKey(callerToCallee: caller ? keys.send : keys.receive, calleeToCaller: caller ? keys.receive : keys.send)
        directs[id] = DirectPath(caller: caller, key: key, now: now)
    }

    /// Starts attempt `generation`: a new agent whose STUN server is the first hop of the call's chain (any node
    /// answers STUN, docs/stun.md), so the server-reflexive candidate comes from the mesh itself. False when no agent
    /// could be made.
    private func attemptDirect(_ id: CallID, _ path: DirectPath, generation: UInt32, now: Int64) -> Bool {
        var settings = ICESettings()
        if let hop = relay.firstHop(call: id.raw), let endpoint = links.upPeer(hop)?.endpoint,
           let ip = endpoint.ipAddress, let port = endpoint.port {
            settings.stunServer = STUNServer(host: ip, port: UInt16(port))
        }
        settings.turn = turnServer
        let agent: ICEAgent
        do {
            agent = try ICEAgent(controlling: path.caller, settings: settings) { [loop] event in
                loop.execute { self.iceEvent(id, generation: generation, event) }
            }
        } catch {
            logger.warning("cannot start an ICE agent", metadata: ["call": "\(id)", "error": "\(error)"])
            return false
        }
        path.begin(generation: generation, agent: agent, now: now)
        counters.directAttempts += 1
        let (ufrag, password) = agent.localCredentials()
        sendIce(id, path, .credentials(ufrag: ufrag, password: password))
        agent.start()
        return true
    }

    private func sendIce(_ id: CallID, _ path: DirectPath, _ body: IceSignal.Body) {
        let signal = IceSignal(fromCaller: path.caller, generation: path.generation, body: body)
        sendCall(id, .ice(path.key.seal(signal)))
    }

    /// An ICE message from the other end, over the chain. One whose MAC is wrong (or that claims to come from this
    /// side) is dropped and counted; one of an older attempt is ignored.
    func receiveIce(_ id: CallID, _ sealed: [UInt8], now: Int64) {
        guard let path = directs[id], path.endedAt == nil else { return }
        guard let signal = path.key.open(sealed), signal.fromCaller != path.caller else {
            counters.iceBadMac += 1
            return
        }
        if !path.caller, case .credentials = signal.body, signal.generation > path.generation {
            // The caller started over: it left the previous path (its fallback message may have been lost).
            if path.agent != nil { fallBack(id, path, why: "the caller started a new attempt", tell: false, now: now) }
            guard attemptDirect(id, path, generation: signal.generation, now: now) else { return }
        }
        guard signal.generation == path.generation, let agent = path.agent else { return }
        switch signal.body {
        case .credentials(let ufrag, let password):
            guard !path.remoteReady else { return }
            agent.setRemote(ufrag: ufrag, password: password)
            path.remoteReady = true
            for candidate in path.early { agent.addRemoteCandidate(candidate) }
            if path.earlyEnd { agent.remoteGatheringDone() }
            path.early = []
        case .candidate(let line):
            if path.remoteReady { agent.addRemoteCandidate(line) } else { path.early.append(line) }
        case .endOfCandidates:
            if path.remoteReady { agent.remoteGatheringDone() } else { path.earlyEnd = true }
        case .fallback:
            fallBack(id, path, why: "the peer went back to the chain", tell: false, now: now)
        }
    }

    /// An event of the agent of attempt `generation` (events of closed or replaced agents are dropped).
    private func iceEvent(_ id: CallID, generation: UInt32, _ event: ICEEvent) {
        guard let path = directs[id], path.generation == generation, let agent = path.agent else { return }
        let now = Self.now()
        switch event {
        case .localCandidate(let sdp):
            sendIce(id, path, .candidate(sdp))
        case .gatheringDone:
            sendIce(id, path, .endOfCandidates)
        case .selectedPair(let local, let remote):
            path.selected = (local, remote)
            if path.selectedAt == nil {
                path.selectedAt = now
                path.lastKeepalive = now
                agent.send(path.keepalive())
            }
        case .received(let bytes):
            guard bytes.starts(with: IceKey.keepaliveMagic) else {
                if let m = media[id], m.inbound(bytes, nowMs: now) { core.mediaArrived(id, now: Self.time()) }
                return
            }
            guard path.takeKeepalive(bytes) else {
                counters.iceBadMac += 1
                return
            }
            let first = path.msToDirect == nil
            if path.received(now: now) {
                counters.directSuccesses += 1
                if first, let ms = path.msToDirect {
                    counters.msToDirectTotal += Int(ms)
                    directTimes.append(ms)
                    if directTimes.count > Self.directTimesKept { directTimes.removeFirst() }
                }
                logger.info("call moved to the direct path", metadata: [
                    "call": "\(id)", "local": "\(path.selected.map { "\($0.local)" } ?? "-")",
                    "remote": "\(path.selected.map { "\($0.remote)" } ?? "-")"])
            }
        case .failed:
            fallBack(id, path, why: "ICE failed", tell: true, now: now)
        case .stateChanged:
            break
        }
    }

    /// Back on the chain at once (media of this very tick goes there), the peer told unless it told us.
    private func fallBack(_ id: CallID, _ path: DirectPath, why: String, tell: Bool, now: Int64) {
        if tell { sendIce(id, path, .fallback) }
        if path.fallBack(now: now) {
            counters.directFallbacks += 1
            logger.info("call back on the chain", metadata: ["call": "\(id)", "why": "\(why)"])
        } else {
            logger.debug("direct path attempt given up", metadata: ["call": "\(id)", "why": "\(why)"])
        }
    }

    /// One SRTP packet of a call out: over the direct path when media goes there (and over the chain as well during
    /// the overlap), else over the chain.
    func sendMedia(_ id: CallID, _ packet: [UInt8], now: Int64) {
        if let path = directs[id], path.isDirect, let agent = path.agent {
            agent.send(packet)
            if !path.onChainToo(now: now) { return }
        }
        sendCall(id, .media(packet))
    }

    /// Every media tick (20 ms): dead paths given up, keepalives, the caller's next attempts.
    func directTick(now: Int64) {
        for (id, path) in directs where path.endedAt == nil {
            if let why = path.deadline(now: now) {
                fallBack(id, path, why: why, tell: true, now: now)
                continue
            }
            if let agent = path.agent, path.selectedAt != nil, now - path.lastKeepalive >= DirectPath.keepaliveMs {
                path.lastKeepalive = now
                agent.send(path.keepalive())
            }
            if path.caller, path.agent == nil, let next = path.nextAttempt, now >= next {
                path.nextAttempt = nil
                if !attemptDirect(id, path, generation: path.generation + 1, now: now) { path.fallBack(now: now) }
            }
        }
    }

    /// "direct srflx A:P > srflx B:Q" while media goes direct.
    func directPathText(_ id: CallID) -> String? {
        guard let path = directs[id], path.isDirect, let pair = path.selected else { return nil }
        return "direct \(pair.local) > \(pair.remote)"
    }

    /// The call summary's `direct` object: where media goes, the pair, time on each path, attempts and fallbacks.
    func directJSON(_ id: CallID, now: Int64) -> JSONValue? {
        guard let path = directs[id] else { return nil }
        var object = path.summary(now: now).mapValues { JSONValue.number($0) }
        object["state"] = .string(path.endedAt != nil ? "ended" : path.isDirect ? "direct" : path.agent != nil ? "checking" : "relayed")
        if let pair = path.selected {
            object["local"] = .string(pair.local.description)
            object["remote"] = .string(pair.remote.description)
        }
        return .object(object)
    }
}
