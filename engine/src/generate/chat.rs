//! Renders the model's chat template (`tokenizer.chat_template`, Jinja) around one user
//! message, with the assistant's turn opened.

use minijinja::{context, Environment, Error, ErrorKind};

pub fn render(template: &str, user: &str, bos: &str, eos: &str) -> Result<String, String> {
    let mut env = Environment::new();
    // Templates call raise_exception to reject unsupported conversations.
    env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_template("chat", template)
        .map_err(|e| format!("chat template does not parse: {e}"))?;
    let t = env.get_template("chat").map_err(|e| e.to_string())?;
    t.render(context! {
        messages => vec![context! { role => "user", content => user }],
        add_generation_prompt => true,
        bos_token => bos,
        eos_token => eos,
    })
    .map_err(|e| format!("chat template failed: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_a_chatml_template() {
        let t = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let s = super::render(t, "Hi", "", "").unwrap();
        assert_eq!(s, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
        assert!(super::render("{{ raise_exception('no') }}", "x", "", "").is_err());
    }
}
