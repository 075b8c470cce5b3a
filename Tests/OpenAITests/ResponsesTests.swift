import Foundation
import Grammar
@testable import OpenAI
import Testing

// The Responses API adapter without a model: decoding bodies into wire types, input items into
// the chat conversation, the output builder and its stream events, and the response store.

private func decode(_ json: String) throws -> ResponsesRequest {
    try ResponsesRequest.parse(Data(json.utf8))
}

/// The `param` of the OpenAIError `body` throws, and its message.
private func refusal(_ json: String) -> (param: String?, message: String)? {
    do {
        _ = try decode(json)
        return nil
    } catch let e as OpenAIError {
        return (e.param, e.message)
    } catch {
        return (nil, "\(error)")
    }
}

/// Every event's data as JSON.
private func objects(_ events: [ResponseEvent]) throws -> [[String: Any]] {
    try events.map { try #require(JSONSerialization.jsonObject(with: Data($0.data.utf8)) as? [String: Any]) }
}

// MARK: - Decoding

@Suite struct ResponsesDecodingTests {
    @Test func stringInputIsOneUserMessage() throws {
        let r = try decode(#"{"model": "m", "input": "Hi", "max_output_tokens": 5, "temperature": 0, "store": false}"#)
        #expect(r.input == [.message(role: "user", text: "Hi")])
        #expect(r.maxOutputTokens == 5)
        #expect(r.temperature == 0)
        #expect(r.store == false)
        #expect(r.stream == false)
    }

    @Test func itemsOfEveryKindDecode() throws {
        let r = try decode("""
        {"model": "m", "input": [
          {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be "}, {"type": "input_text", "text": "brief."}]},
          {"role": "user", "content": "Weather?"},
          {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}", "id": "fc_1", "status": "completed"},
          {"type": "function_call_output", "call_id": "c1", "output": "sunny"}]}
        """)
        #expect(r.input == [.message(role: "system", text: "Be brief."), .message(role: "user", text: "Weather?"),
                            .functionCall(callID: "c1", name: "w", arguments: "{}"), .functionCallOutput(callID: "c1", output: "sunny")])
    }

    @Test(arguments: [
        (#"{"model": "m", "input": "x", "seed": 1}"#, "seed", "not a field"),
        (#"{"model": "m", "input": "x", "tools": [{"type": "web_search"}]}"#, "tools[0].type", "web_search"),
        (#"{"model": "m", "input": "x", "tools": [{"type": "file_search", "vector_store_ids": []}]}"#, "tools[0].type", "file_search"),
        (#"{"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}]}"#, "input[0].content[0].type", "input_image"),
        (#"{"model": "m", "input": [{"type": "reasoning", "id": "r"}]}"#, "input[0].type", "reasoning"),
        (#"{"model": "m", "input": [{"role": "user", "content": 3}]}"#, "input[0].content", "a list of text parts"),
        (#"{"model": "m", "input": "x", "temperature": "hot"}"#, "temperature", "a number"),
        (#"{"model": "m", "input": "x", "max_output_tokens": 1.5}"#, "max_output_tokens", "an integer"),
        (#"{"model": "m", "input": "x", "reasoning": {"effort": "low"}}"#, "reasoning", "reasoning"),
        (#"{"model": "m", "input": "x", "truncation": "auto"}"#, "truncation", "auto"),
        (#"{"model": "m", "input": "x", "text": {"verbosity": "high"}}"#, "text.verbosity", "high"),
        (#"{"model": "m", "input": "x", "tool_choice": {"type": "web_search_preview"}}"#, "tool_choice.type", "web_search_preview"),
        (#"{"model": "m"}"#, "input", "required"),
        (#"{"input": "x"}"#, "model", "required"),
    ])
    func refusalsNameTheField(body: String, param: String, word: String) throws {
        let r = try #require(refusal(body))
        #expect(r.param == param)
        #expect(r.message.contains(word), "\(r.message)")
    }

    @Test func schemasKeepDocumentOrder() throws {
        let r = try decode(#"{"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object", "properties": {"z": {"type": "integer"}, "a": {"type": "integer"}}}}}}"#)
        guard case .jsonSchema(_, let schema, _)? = r.text, case .object(let members)? = schema["properties"] else {
            Issue.record("no json_schema format")
            return
        }
        #expect(members.map(\.0) == ["z", "a"])
    }

    @Test func theInternalRequestHonoursToolChoiceAndTextFormat() throws {
        let tools = #""tools": [{"type": "function", "name": "w", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}, {"type": "function", "name": "t"}]"#
        let named = try decode(#"{"model": "m", "input": "x", "tool_choice": {"type": "function", "name": "t"}, "#  + tools + "}")
            .completionRequest(messages: [], defaults: .openAI)
        #expect(named.toolChoice == .function("t"))
        #expect(named.outputGrammarParam == "tools")
        let grammar = try #require(named.outputGrammar)
        #expect(grammar.contains("\\\"t\\\"") && !grammar.contains("\\\"w\\\""), "a named choice allows only that function")
        let none = try decode(#"{"model": "m", "input": "x", "tool_choice": "none", "#  + tools + "}").completionRequest(messages: [], defaults: .openAI)
        #expect(!none.usesTools && none.outputGrammar == nil)
        let schema = try decode(#"{"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}}"#).completionRequest(messages: [], defaults: .openAI)
        #expect(schema.outputGrammarParam == "text.format")
        #expect(throws: OpenAIError.self) {
            try decode(#"{"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}, "#  + tools + "}").completionRequest(messages: [], defaults: .openAI)
        }
        #expect(throws: OpenAIError.self) {
            try decode(#"{"model": "m", "input": "x", "tool_choice": {"type": "function", "name": "nope"}, "#  + tools + "}").completionRequest(messages: [], defaults: .openAI)
        }
    }
}

// MARK: - Input items to the conversation

@Suite struct ResponsesConversationTests {
    @Test func instructionsHistoryAndItemsInOrder() {
        let history = [APIMessage(role: "user", content: "Hi"), APIMessage(role: "assistant", content: "Hello")]
        let out = ResponsesRequest.conversation(instructions: "Be brief.", history: history, input: [.message(role: "user", text: "Bye")])
        #expect(out.map(\.role) == ["system", "user", "assistant", "user"])
        #expect(out.map(\.content) == ["Be brief.", "Hi", "Hello", "Bye"])
    }

    @Test func callsJoinTheAssistantTurnAndOutputsAreToolMessages() {
        let out = ResponsesRequest.conversation(instructions: nil, history: [], input: [
            .message(role: "user", text: "Weather and time?"),
            .message(role: "assistant", text: "Checking."),
            .functionCall(callID: "c1", name: "w", arguments: #"{"city": "Oslo"}"#),
            .functionCall(callID: "c2", name: "t", arguments: "{}"),
            .functionCallOutput(callID: "c1", output: "sunny"),
            .functionCallOutput(callID: "c2", output: "noon"),
            .functionCall(callID: "c3", name: "w", arguments: "{}"),
        ])
        #expect(out.map(\.role) == ["user", "assistant", "tool", "tool", "assistant"])
        #expect(out[1].content == "Checking.")
        #expect(out[1].toolCalls == [APIToolCall(id: "c1", name: "w", arguments: #"{"city": "Oslo"}"#), APIToolCall(id: "c2", name: "t", arguments: "{}")])
        #expect(out[2].toolCallID == "c1" && out[2].content == "sunny")
        #expect(out[3].toolCallID == "c2")
        #expect(out[4].content == "" && out[4].toolCalls.map(\.id) == ["c3"])
    }
}

// MARK: - Output and events

@Suite struct ResponsesEventTests {
    @Test func eventsAreNumberedFromZeroAndCarryTheirType() throws {
        var encoder = ResponseEventEncoder()
        let events = (0..<3).map { _ in encoder.event("response.output_text.delta",
                                                      ResponseEventEncoder.Text(itemID: "msg_1", outputIndex: 0, delta: "a")) }
        let data = try objects(events)
        #expect(data.map { $0["sequence_number"] as? Int } == [0, 1, 2])
        #expect(data.allSatisfy { $0["type"] as? String == "response.output_text.delta" && $0["delta"] as? String == "a" })
        #expect(events.allSatisfy { $0.name == "response.output_text.delta" })
        #expect(encoder.sequenceNumber == 3)
    }

    @Test func aTextReplyMakesOneMessageInTheDocumentedOrder() throws {
        var output = ResponseOutput()
        var events = output.append(text: "Hel", toolCalls: nil)
        events += output.append(text: "", toolCalls: nil)
        events += output.append(text: "lo", toolCalls: nil)
        events += output.finish(complete: true)
        #expect(events.map(\.name) == ["response.output_item.added", "response.content_part.added", "response.output_text.delta",
                                       "response.output_text.delta", "response.output_text.done", "response.content_part.done",
                                       "response.output_item.done"])
        let data = try objects(events)
        #expect(data.map { $0["sequence_number"] as? Int } == Array(0..<7))
        #expect(data[4]["text"] as? String == "Hello")
        let item = try #require(data[6]["item"] as? [String: Any])
        #expect(item["status"] as? String == "completed")
        let parts = try #require(item["content"] as? [[String: Any]])
        #expect(parts.map { $0["text"] as? String } == ["Hello"])
        guard case .message(_, "completed", "Hello")? = output.items.first, output.items.count == 1 else {
            Issue.record("output is \(output.items)")
            return
        }
        #expect(output.assistantMessage == APIMessage(role: "assistant", content: "Hello"))
    }

    @Test func toolCallDeltasMakeFunctionCallItems() throws {
        var output = ResponseOutput()
        var events = output.append(text: "", toolCalls: [
            ToolCallDelta(index: 0, id: "call_a", type: "function", function: FunctionDelta(name: "w", arguments: "")),
            ToolCallDelta(index: 0, id: nil, type: nil, function: FunctionDelta(name: nil, arguments: #"{"city""#)),
        ])
        events += output.append(text: "", toolCalls: [
            ToolCallDelta(index: 0, id: nil, type: nil, function: FunctionDelta(name: nil, arguments: #": "Oslo"}"#)),
            ToolCallDelta(index: 1, id: "call_b", type: "function", function: FunctionDelta(name: "t", arguments: "")),
            ToolCallDelta(index: 1, id: nil, type: nil, function: FunctionDelta(name: nil, arguments: "{}")),
        ])
        events += output.finish(complete: true)
        #expect(events.map(\.name) == ["response.output_item.added", "response.function_call_arguments.delta",
                                       "response.function_call_arguments.delta", "response.output_item.added",
                                       "response.function_call_arguments.delta",
                                       "response.function_call_arguments.done", "response.output_item.done",
                                       "response.function_call_arguments.done", "response.output_item.done"])
        let data = try objects(events)
        #expect(data[5]["arguments"] as? String == #"{"city": "Oslo"}"#)
        #expect(data[5]["output_index"] as? Int == 0 && data[7]["output_index"] as? Int == 1)
        #expect(output.assistantMessage.toolCalls == [APIToolCall(id: "call_a", name: "w", arguments: #"{"city": "Oslo"}"#),
                                                      APIToolCall(id: "call_b", name: "t", arguments: "{}")])
    }

    @Test func reasoningIsAReasoningItemBeforeTheMessage() throws {
        var output = ResponseOutput()
        var events = output.append(reasoning: "Two and", text: "", toolCalls: nil)
        events += output.append(reasoning: " two.", text: "", toolCalls: nil)
        events += output.append(text: "Four.", toolCalls: nil)
        events += output.finish(complete: true)
        #expect(events.map(\.name) == ["response.output_item.added", "response.reasoning_text.delta", "response.reasoning_text.delta",
                                       "response.reasoning_text.done", "response.output_item.done",
                                       "response.output_item.added", "response.content_part.added", "response.output_text.delta",
                                       "response.output_text.done", "response.content_part.done", "response.output_item.done"])
        let data = try objects(events)
        #expect(data.map { $0["sequence_number"] as? Int } == Array(0..<11))
        let added = try #require(data[0]["item"] as? [String: Any])
        let id = try #require(added["id"] as? String)
        #expect(id.hasPrefix("rs_") && added["type"] as? String == "reasoning" && added["status"] as? String == "in_progress")
        #expect((added["content"] as? [Any])?.isEmpty == true && (added["summary"] as? [Any])?.isEmpty == true)
        #expect(data[1]["item_id"] as? String == id && data[1]["output_index"] as? Int == 0 && data[1]["content_index"] as? Int == 0)
        #expect(data[1]["delta"] as? String == "Two and" && data[1]["logprobs"] == nil)
        #expect(data[5]["output_index"] as? Int == 1)
        #expect(data[3]["text"] as? String == "Two and two." && data[3]["item_id"] as? String == id && data[3]["delta"] == nil)
        let done = try #require(data[4]["item"] as? [String: Any])
        #expect(done["status"] as? String == "completed" && data[4]["output_index"] as? Int == 0)
        let parts = try #require(done["content"] as? [[String: Any]])
        #expect(parts.count == 1 && parts[0]["type"] as? String == "reasoning_text" && parts[0]["text"] as? String == "Two and two.")
        guard case .reasoning(id, "completed", "Two and two.")? = output.items.first, case .message(_, "completed", "Four.")? = output.items.last,
              output.items.count == 2 else {
            Issue.record("output is \(output.items)")
            return
        }
        var expected = APIMessage(role: "assistant", content: "Four.")
        expected.reasoning = "Two and two."
        #expect(output.assistantMessage == expected)
    }

    @Test func aReplyCutInsideTheReasoningGetsAnEmptyIncompleteMessage() throws {
        var output = ResponseOutput()
        var events = output.append(reasoning: "Two", text: "", toolCalls: nil)
        events += output.finish(complete: false)
        #expect(events.map(\.name) == ["response.output_item.added", "response.reasoning_text.delta",
                                       "response.reasoning_text.done", "response.output_item.done",
                                       "response.output_item.added", "response.content_part.added",
                                       "response.output_text.done", "response.content_part.done", "response.output_item.done"])
        guard case .reasoning(_, "incomplete", "Two")? = output.items.first, case .message(_, "incomplete", "")? = output.items.last else {
            Issue.record("output is \(output.items)")
            return
        }
    }

    @Test func anIncompleteEmptyReplyIsAnIncompleteEmptyMessage() throws {
        var output = ResponseOutput()
        let events = output.finish(complete: false)
        #expect(events.map(\.name) == ["response.output_item.added", "response.content_part.added", "response.output_text.done",
                                       "response.content_part.done", "response.output_item.done"])
        guard case .message(_, "incomplete", "")? = output.items.first else {
            Issue.record("output is \(output.items)")
            return
        }
    }
}

// MARK: - Store

@Suite struct ResponseStoreTests {
    private func entry(_ text: String) -> ResponseStore.Entry {
        ResponseStore.Entry(body: Data(text.utf8), conversation: [APIMessage(role: "user", content: text)])
    }

    @Test func keepsTheNewestUpToItsCapacity() {
        let store = ResponseStore(capacity: 2)
        store.store("a", entry("a"))
        store.store("b", entry("b"))
        store.store("c", entry("c"))
        #expect(store.entry("a") == nil)
        #expect(store.entry("b")?.body == Data("b".utf8))
        #expect(store.count == 2)
        #expect(store.remove("b"))
        #expect(!store.remove("b"))
        store.store("d", entry("d"))
        #expect(store.entry("c") != nil && store.entry("d") != nil)
    }

    @Test func capacityZeroKeepsNothing() {
        let store = ResponseStore(capacity: 0)
        store.store("a", entry("a"))
        #expect(store.entry("a") == nil && store.count == 0)
    }
}
