import GGUF

/// Chat templates for architectures whose GGUF files often ship without `tokenizer.chat_template`
/// (the Gemma 3 conversions do), keyed by `general.architecture`. Each renders the model's
/// documented turn format in the Jinja subset; `ChatTemplate(gguf:)` falls back to them.
public enum BuiltInTemplates {
    /// Gemma 3: `<start_of_turn>user` / `<start_of_turn>model` turns closed by `<end_of_turn>`;
    /// a system message is prepended to the first user turn (Gemma has no system role); roles
    /// must alternate.
    public static let gemma3 = """
    {{- bos_token -}}
    {%- if messages[0]['role'] == 'system' -%}
        {%- set system_prefix = messages[0]['content'] + '\\n\\n' -%}
        {%- set turns = messages[1:] -%}
    {%- else -%}
        {%- set system_prefix = '' -%}
        {%- set turns = messages -%}
    {%- endif -%}
    {%- for message in turns -%}
        {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
            {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}
        {%- endif -%}
        {%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}
        {{- '<start_of_turn>' + role + '\\n' + (system_prefix if loop.first else '') + message['content'] | trim + '<end_of_turn>\\n' -}}
    {%- endfor -%}
    {%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}
    """

    /// The built-in template source for `architecture`, if there is one.
    public static func source(architecture: String) -> String? {
        switch architecture {
        case "gemma3": return gemma3
        default: return nil
        }
    }

    /// The file's `tokenizer.chat_template`, else the built-in template of its architecture.
    public static func source(of file: GGUFFile) -> String? {
        file.optionalString("tokenizer.chat_template") ?? file.optionalString("general.architecture").flatMap { source(architecture: $0) }
    }
}
